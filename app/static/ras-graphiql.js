// Starts GraphiQL with this service's settings. Loaded from the service itself, like every other asset of the
// page: the page works without internet access and its Content-Security-Policy allows no other origin.
(function () {
  'use strict';
  var config = JSON.parse(document.getElementById('ras-graphiql-config').textContent);
  var send = GraphiQL.createFetcher({ url: config.endpoint });
  var keyHeader = 'X-Internal-API-Key';

  // Every request needs the service credentials; until they are entered, say so instead of sending a request
  // that can only be refused (GraphiQL asks for the schema as soon as the page opens).
  function fetcher(params, options) {
    var headers = (options && options.headers) || {};
    if (!headers[keyHeader]) {
      return Promise.resolve({
        errors: [{ message: 'Enter ' + keyHeader + ' and X-Service-ID in the Headers tab below, then run again ' +
          '(and re-fetch the schema with the ⟳ button for docs and completion).' }],
      });
    }
    return send(params, options);
  }
  var graphiql = React.createElement(GraphiQL, {
    fetcher: fetcher,
    defaultTabs: config.tabs,
    defaultHeaders: config.headers,
    defaultEditorToolsVisibility: 'headers',
    isHeadersEditorEnabled: true,
    // The API key is a secret: keep it out of the browser's storage.
    shouldPersistHeaders: false,
  });
  ReactDOM.render(graphiql, document.getElementById('graphiql'));
})();
