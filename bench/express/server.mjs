// The @logto/express side of the benchmark (bench/run): the guide's setup, with
// cookie-parser and express-session (its default MemoryStore) before the Logto routes.
//
//   PORT=<port> LOGTO_ENDPOINT=http://127.0.0.1:<provider> node bench/express/server.mjs
//
// Routes:
//   GET  /user      withLogto(config), answers req.user (the guide's req.user)
//   GET  /shopping  withLogto({ ...config, getAccessToken: true, resource }), answers req.user
//   POST /__bench/seed         bench only: puts tokens in this browser's session, where
//                              @logto/node keeps them (see below); answers with the session cookie
//   GET  /__bench/fetch-count  bench only: how many HTTP requests the SDK made (must stay 0)
//
// Where @logto/node keeps a signed-in user (read from node_modules/@logto/*):
// @logto/express's ExpressStorage maps storage keys to `req.session[key]`, and @logto/client
// stores PersistKey.IdToken as `idToken` (the raw JWT), PersistKey.RefreshToken as
// `refreshToken`, and PersistKey.AccessToken as `accessToken`: a JSON string of a map from
// buildAccessTokenKey(resource) = `@<resource>` (`@` alone for the code exchange's token) to
// `{ token, scope, expiresAt }` (seconds). getAccessToken(resource) returns a cached token while
// `expiresAt > now`, and only otherwise calls the token endpoint.

import express from 'express';
import cookieParser from 'cookie-parser';
import session from 'express-session';
import { handleAuthRoutes, withLogto } from '@logto/express';

// Count every request the SDK sends (it calls the global fetch at request time).
let fetchCount = 0;
const realFetch = globalThis.fetch;
globalThis.fetch = (...args) => {
  fetchCount += 1;
  return realFetch(...args);
};

const port = Number(process.env.PORT ?? 3000);
const SHOPPING = 'https://shopping.example.com/api';
const STORE = 'https://store.example.com/api';

// The same application and scopes as the Rocket server (examples/bench_server.rs).
const config = {
  appId: 'sample-app',
  appSecret: 'sample-secret',
  endpoint: process.env.LOGTO_ENDPOINT ?? 'http://127.0.0.1:3001',
  baseUrl: process.env.BASE_URL ?? `http://127.0.0.1:${port}`,
  scopes: ['email', 'custom_data', 'urn:logto:scope:organizations', 'urn:logto:scope:organization_roles',
    'shopping:read', 'shopping:write', 'store:read'],
  resources: [SHOPPING, STORE],
};

const app = express();
app.use(cookieParser());
app.use(
  session({
    secret: 'random_session_key',
    cookie: { maxAge: 14 * 24 * 60 * 60 * 1000 },
  }),
);
app.use(handleAuthRoutes(config));

app.get('/user', withLogto(config), (req, res) => {
  res.json(req.user);
});

app.get('/shopping', withLogto({ ...config, getAccessToken: true, resource: SHOPPING }), (req, res) => {
  res.json(req.user);
});

const scopeOf = (jwt) => {
  try {
    return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString()).scope ?? '';
  } catch {
    return '';
  }
};

app.post('/__bench/seed', express.json({ limit: '1mb' }), (req, res) => {
  const { idToken, refreshToken, userinfoToken, resources } = req.body;
  const map = {
    '@': {
      token: userinfoToken.token,
      scope: ['openid', 'offline_access', 'profile', ...config.scopes].join(' '),
      expiresAt: userinfoToken.expiresAt,
    },
  };
  for (const [resource, { token, expiresAt }] of Object.entries(resources)) {
    map[`@${resource}`] = { token, scope: scopeOf(token), expiresAt };
  }
  req.session.idToken = idToken;
  req.session.refreshToken = refreshToken;
  req.session.accessToken = JSON.stringify(map);
  res.json({ seeded: true });
});

app.get('/__bench/fetch-count', (req, res) => {
  res.json({ fetch: fetchCount });
});

const server = app.listen(port, '127.0.0.1', () => {
  console.log(`BENCH_EXPRESS_READY http://127.0.0.1:${port}`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
