// Renders GraphiQL for Rapport. Loaded as a file (no inline script) so the
// page works under `Content-Security-Policy: default-src 'self'`.
(function () {
  'use strict';

  var DEFAULT_HEADERS = JSON.stringify(
    { Authorization: 'Bearer <paste RAPPORT_ADMIN_TOKEN here>' },
    null,
    2
  );

  var DEFAULT_QUERY = [
    '# Rapport GraphQL',
    '#',
    '# Put your admin token in the Headers tab',
    '# below, then press the run button.',
    '',
    '{',
    '  __typename',
    '}',
    ''
  ].join('\n');

  // Same origin, so the endpoint is simply /graphql. Headers typed into the
  // headers editor are sent with every request by the fetcher.
  var fetcher = GraphiQL.createFetcher({ url: '/graphql' });

  var root = ReactDOM.createRoot(document.getElementById('graphiql'));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultQuery: DEFAULT_QUERY,
      defaultHeaders: DEFAULT_HEADERS,
      isHeadersEditorEnabled: true,
      defaultEditorToolsVisibility: 'headers',
      // Keep the token out of localStorage unless the user opts in.
      shouldPersistHeaders: false
    })
  );
})();
