// A recording HTTP forward proxy for bench/run's sign-in: the Rocket app under test reaches the
// provider through it (HTTP_PROXY), and it keeps a copy of every token-endpoint answer, so
// that @logto/express can be seeded with exactly the tokens the Rocket session holds, without
// knowing how rocket_logto encodes its cookie.
//
//   node bench/token_recorder.mjs   -> prints `TOKEN_RECORDER_READY http://127.0.0.1:<port>`
//   GET /__recorded (sent directly, not through the proxy): the answers so far, oldest first,
//   as [{ "grant_type": ..., "resource": ..., "answer": { access_token, id_token, ... } }].

import http from 'node:http';

const recorded = [];

const server = http.createServer((req, res) => {
  if (req.url === '/__recorded') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(recorded));
    return;
  }
  let target;
  try {
    target = new URL(req.url); // a forward proxy gets absolute-form targets
  } catch {
    res.writeHead(400).end('not a proxy request');
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    const headers = { ...req.headers };
    delete headers['proxy-connection'];
    const upstream = http.request(target, { method: req.method, headers }, (up) => {
      const parts = [];
      up.on('data', (c) => parts.push(c));
      up.on('end', () => {
        const answer = Buffer.concat(parts);
        if (req.method === 'POST' && target.pathname.endsWith('/token') && up.statusCode === 200) {
          const form = new URLSearchParams(body.toString());
          try {
            recorded.push({
              at: Math.floor(Date.now() / 1000),
              grant_type: form.get('grant_type'),
              resource: form.get('resource'),
              answer: JSON.parse(answer.toString()),
            });
          } catch {
            // not JSON: not a token answer
          }
        }
        const out = { ...up.headers };
        delete out['transfer-encoding'];
        out['content-length'] = String(answer.length);
        res.writeHead(up.statusCode, out);
        res.end(answer);
      });
    });
    upstream.on('error', (e) => res.writeHead(502).end(String(e)));
    upstream.end(body);
  });
});

server.listen(0, '127.0.0.1', () => {
  console.log(`TOKEN_RECORDER_READY http://127.0.0.1:${server.address().port}`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
