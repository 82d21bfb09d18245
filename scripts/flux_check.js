// Checks Flux queries with the Flux language server (@influxdata/flux-lsp-node: the Flux parser and type
// checker compiled to WebAssembly), without an InfluxDB: reads [{name, flux}] as JSON on stdin, writes
// [{name, errors: [message, ...]}] as JSON on stdout. The package's folder is the first argument.
//   node scripts/flux_check.js .tools/flux-lsp/node_modules/@influxdata/flux-lsp-node < queries.json
const path = require('path');
for (const level of ['log', 'info', 'debug', 'warn']) console[level] = () => {};  // the server's log lines
const { Lsp } = require(path.resolve(process.argv[2]));

const queries = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const server = new Lsp();
const found = new Map();
server.onMessage((text) => {
  const message = JSON.parse(text);
  if (message.method === 'textDocument/publishDiagnostics') {
    found.set(message.params.uri, message.params.diagnostics.filter((d) => d.severity === 1).map(
      (d) => `line ${d.range.start.line + 1}: ${d.message}`));
  }
});
server.run().catch((err) => { console.error(`flux language server stopped: ${err}`); process.exit(2); });

(async () => {
  const send = (message) => server.send(JSON.stringify({ jsonrpc: '2.0', ...message }));
  await send({ id: 1, method: 'initialize', params: { capabilities: {} } });
  await send({ method: 'initialized', params: {} });
  // One query at a time, each in its own folder: the server checks the files of a folder as one package.
  const results = [];
  for (const [i, query] of queries.entries()) {
    const uri = `file:///query${i}/query.flux`;
    await send({ method: 'textDocument/didOpen',
                 params: { textDocument: { uri, languageId: 'flux', version: 1, text: query.flux } } });
    const deadline = Date.now() + 20000;
    while (!found.has(uri) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    if (!found.has(uri)) { console.error(`no diagnostics for query ${query.name} within 20 s`); process.exit(2); }
    results.push({ name: query.name, errors: found.get(uri) });
    await send({ method: 'textDocument/didClose', params: { textDocument: { uri } } });
  }
  process.stdout.write(JSON.stringify(results));
  process.exit(0);
})();
