// Starts GraphiQL with this service's settings. Loaded from the service itself, like every other asset of the
// page: the page works without internet access and its Content-Security-Policy allows no other origin.
(function () {
  'use strict';
  var config = JSON.parse(document.getElementById('ras-graphiql-config').textContent);
  var send = GraphiQL.createFetcher({ url: config.endpoint });
  var keyHeader = 'X-Internal-API-Key';

  // The type of the operation GraphiQL is about to run: the keyword opening the definition named
  // `operationName` (or the first one). Only words outside braces and parentheses count, comments and strings
  // removed first, so a field or argument called `subscription` is not mistaken for an operation.
  function operationType(query, operationName) {
    var text = query.replace(/"""[\s\S]*?"""/g, '""').replace(/"(?:\\.|[^"\\\n])*"/g, '""').replace(/#[^\n]*/g, '');
    var token = /[{}()]|\$?[_A-Za-z][_0-9A-Za-z]*/g;
    var braces = 0;
    var parens = 0;
    var pending = null;
    var operations = [];
    var match;
    while ((match = token.exec(text)) !== null) {
      var t = match[0];
      if (t === '{') {
        if (braces === 0 && parens === 0) {
          operations.push(pending || { type: 'query', name: null });  // `{ … }` alone is a query
          pending = null;
        }
        braces += 1;
      } else if (t === '}') {
        braces -= 1;
      } else if (t === '(') {
        parens += 1;
        if (pending) { pending.named = true; }
      } else if (t === ')') {
        parens -= 1;
      } else if (braces === 0 && parens === 0 && t.charAt(0) !== '$') {
        if (pending && !pending.named) {
          pending.name = t;
          pending.named = true;
        } else if (t === 'query' || t === 'mutation' || t === 'subscription' || t === 'fragment') {
          pending = { type: t, name: null, named: false };
        }
      }
    }
    operations = operations.filter(function (o) {
      return o.type !== 'fragment' && (!operationName || o.name === operationName);
    });
    return operations.length ? operations[0].type : 'query';
  }

  // A subscription over graphql-transport-ws, as an Observable GraphiQL shows every update of. Browsers cannot
  // set headers on a WebSocket, so the Headers tab's values go in connection_init, where the service reads them.
  function subscribe(params, headers) {
    return {
      subscribe: function (observer) {
        var scheme = window.location.protocol === 'https:' ? 'wss://' : 'ws://';
        var ws = new WebSocket(scheme + window.location.host + config.endpoint, 'graphql-transport-ws');
        var done = false;
        function finish() {
          if (done) { return; }
          done = true;
          observer.complete();
          ws.close(1000);
        }
        ws.onopen = function () {
          ws.send(JSON.stringify({ type: 'connection_init', payload: headers }));
        };
        ws.onmessage = function (event) {
          var message = JSON.parse(event.data);
          if (message.type === 'connection_ack') {
            ws.send(JSON.stringify({ id: '1', type: 'subscribe', payload: params }));
          } else if (message.type === 'next') {
            observer.next(message.payload);
          } else if (message.type === 'error') {
            observer.next({ errors: message.payload });
            finish();
          } else if (message.type === 'complete') {
            finish();
          } else if (message.type === 'ping') {
            ws.send(JSON.stringify({ type: 'pong' }));
          }
        };
        ws.onclose = function (event) {
          if (!done) {
            observer.next({ errors: [{ message: 'The connection closed (' + event.code + '): ' + event.reason }] });
            finish();
          }
        };
        return {
          unsubscribe: function () {
            if (done) { return; }
            done = true;
            if (ws.readyState === WebSocket.OPEN) {
              ws.send(JSON.stringify({ id: '1', type: 'complete' }));
            }
            ws.close(1000);
          },
        };
      },
    };
  }

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
    if (operationType(params.query || '', params.operationName) === 'subscription') {
      return subscribe(params, headers);
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
