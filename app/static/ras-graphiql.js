// Starts GraphiQL 4 (React 18) with this service's settings (app/graphiql.py writes them into the page). Loaded
// from the service itself, like every other file of the page: it works offline, and its Content-Security-Policy
// allows no other origin.
//
// * Every tab opens with the service's headers and its example's variables filled in. The headers are one set
//   for the whole page: what is entered in one tab's Headers editor is what every tab shows and sends.
// * The schema (Docs, completion) is fetched as soon as the headers hold X-Internal-API-Key and X-Service-ID,
//   and again whenever they change; until then the Docs wait for them rather than show an error.
// * Subscriptions run over graphql-transport-ws on the same path, with the headers in connection_init.
// * Tabs and history live only as long as the page: nothing is written to the browser's storage.
(function () {
  'use strict';
  const config = JSON.parse(document.getElementById('ras-graphiql-config').textContent);
  const h = React.createElement;
  const send = GraphiQL.createFetcher({ url: config.endpoint, enableIncrementalDelivery: false });
  const SETTLE_MS = 400; // a header edit counts once typing paused this long (no schema request per keystroke)

  let shared = config.headers; // the Headers text every tab shows
  let schemaAskedWith = null; // the headers (as JSON) of the latest schema request
  let waiting = []; // schema requests waiting for the credentials
  let introspect = null; // GraphiQL's "fetch the schema again", from <Sync>
  let settle = null;
  const listeners = new Set(); // components showing whether the credentials are there

  function parseHeaders(text) {
    try {
      const value = JSON.parse(text || '{}');
      return value && typeof value === 'object' && !Array.isArray(value) ? value : null;
    } catch (e) {
      return null;
    }
  }

  function filled(value) {
    return typeof value === 'string' && value.trim() !== '';
  }

  function hasCredentials(headers) {
    return !!headers && filled(headers[config.keyHeader]) && filled(headers[config.serviceHeader]);
  }

  function credentialsHint() {
    return 'Enter ' + config.keyHeader + ' and ' + config.serviceHeader + ' in the Headers tab below: every tab ' +
      'uses them, and the Docs load as soon as they are there.';
  }

  function askSchema(params, headers) {
    schemaAskedWith = JSON.stringify(headers);
    return send(params, { headers: headers });
  }

  // GraphiQL asks for the schema when the page opens, before its Headers editor exists, and then only when ⟳ is
  // pressed: take the page's headers when the request has none, wait for them when there are none yet.
  function schema(params, headers) {
    const usable = hasCredentials(headers) ? headers : parseHeaders(shared);
    if (hasCredentials(usable)) {
      return askSchema(params, usable);
    }
    return new Promise(function (resolve) { waiting.push(resolve); }).then(function (ready) {
      return askSchema(params, ready);
    });
  }

  function sameHeaders(a, b) {
    const x = parseHeaders(a);
    return x !== null && JSON.stringify(x) === JSON.stringify(parseHeaders(b));
  }

  function headersEdited(text) {
    shared = text;
    clearTimeout(settle);
    settle = setTimeout(function () {
      const headers = parseHeaders(shared);
      const ready = hasCredentials(headers);
      listeners.forEach(function (listener) { listener(ready); });
      if (!ready) {
        return;
      }
      if (waiting.length) {
        const resolved = waiting;
        waiting = [];
        resolved.forEach(function (resolve) { resolve(headers); });
      } else if (JSON.stringify(headers) !== schemaAskedWith && introspect) {
        introspect();
      }
    }, SETTLE_MS);
  }

  // The operation GraphiQL is about to run. GraphiQL takes the operation's name from the query editor a moment
  // after its text changed, so right after a tab switch the name can still be the previous tab's: a name the
  // document does not have then stands for its only operation.
  function operationOf(params) {
    let document;
    try {
      document = GraphiQL.GraphQL.parse(params.query || '');
    } catch (e) {
      return null; // the service reports the syntax error
    }
    const operations = document.definitions.filter(function (d) { return d.kind === 'OperationDefinition'; });
    const named = operations.find(function (o) { return o.name && o.name.value === params.operationName; });
    return named || (operations.length === 1 ? operations[0] : null);
  }

  // A subscription over graphql-transport-ws, as an Observable GraphiQL shows every update of. Browsers cannot
  // set headers on a WebSocket, so the Headers tab's values go in connection_init, where the service reads them.
  function subscribe(params, headers) {
    return {
      subscribe: function (observer) {
        const scheme = window.location.protocol === 'https:' ? 'wss://' : 'ws://';
        const ws = new WebSocket(scheme + window.location.host + config.endpoint, 'graphql-transport-ws');
        let done = false;
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
          const message = JSON.parse(event.data);
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

  function fetcher(params, options) {
    const headers = (options && options.headers) || {};
    if (params.operationName === 'IntrospectionQuery') {
      return schema(params, headers);
    }
    if (!hasCredentials(headers)) {
      return Promise.resolve({ errors: [{ message: credentialsHint() }] });
    }
    const operation = operationOf(params);
    if (operation && params.operationName) {
      params = Object.assign({}, params, { operationName: operation.name ? operation.name.value : null });
    }
    if (operation && operation.operation === 'subscription') {
      return subscribe(params, headers);
    }
    return send(params, { headers: headers });
  }

  // Inside GraphiQL: keeps one set of headers for all tabs, and hands out GraphiQL's schema refetch. An edit of the
  // Headers editor (typed, pasted, prettified) becomes the page's headers; GraphiQL's own setValue showing a tab's
  // older headers as it becomes active does not, and is replaced by the page's.
  function Sync() {
    const editor = GraphiQL.React.useEditorContext({ nonNull: true });
    const refetch = GraphiQL.React.useSchemaStore(function (state) { return state.introspect; });
    const headerEditor = editor.headerEditor;
    React.useEffect(function () {
      introspect = refetch;
    }, [refetch]);
    React.useEffect(function () {
      if (!headerEditor) {
        return undefined;
      }
      function changed(instance, change) {
        const text = instance.getValue();
        if (change.origin !== 'setValue' || sameHeaders(text, shared)) {
          headersEdited(text);
        }
      }
      headerEditor.on('change', changed);
      return function () { headerEditor.off('change', changed); };
    }, [headerEditor]);
    React.useEffect(function () {
      if (headerEditor && headerEditor.getValue() !== shared) {
        headerEditor.setValue(shared);
      }
    }); // after every render of GraphiQL's editor state: a tab switch included
    return null;
  }

  function Title() {
    const [ready, setReady] = React.useState(hasCredentials(parseHeaders(shared)));
    React.useEffect(function () {
      listeners.add(setReady);
      return function () { listeners.delete(setReady); };
    }, []);
    if (ready) {
      return h('span', { className: 'ras-graphiql-title' }, 'Result Aggregator Service');
    }
    return h('span', { className: 'ras-graphiql-hint', role: 'status', title: credentialsHint() },
      'Enter ' + config.keyHeader + ' in Headers ↓');
  }

  // GraphiQL's Storage interface over a Map: the page starts from the examples each time it is opened.
  function memoryStorage() {
    const items = new Map();
    return {
      getItem: function (key) { return items.has(key) ? items.get(key) : null; },
      setItem: function (key, value) { items.set(key, String(value)); },
      removeItem: function (key) { items.delete(key); },
      clear: function () { items.clear(); },
      get length() { return items.size; },
    };
  }

  const first = config.tabs[0];
  const props = {
    fetcher: fetcher,
    defaultTabs: config.tabs,
    defaultHeaders: config.headers,
    // GraphiQL fills the first tab's Variables editor from this rather than from defaultTabs[0].
    variables: first ? first.variables : undefined,
    defaultEditorToolsVisibility: hasCredentials(parseHeaders(config.headers)) ? 'variables' : 'headers',
    isHeadersEditorEnabled: true,
    // The API key is a secret: keep it out of the browser's storage.
    shouldPersistHeaders: false,
    storage: memoryStorage(),
  };
  ReactDOM.createRoot(document.getElementById('graphiql')).render(
    h(GraphiQL, props, h(GraphiQL.Logo, null, h(Title)), h(Sync))
  );
})();
