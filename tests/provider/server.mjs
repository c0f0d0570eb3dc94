// A Logto-like OpenID provider for rocket_logto's integration tests.
//
// Built on oidc-provider (the library Logto itself runs on) and configured to
// behave on the wire like a Logto tenant: issuer `<endpoint>/oidc`, ES384 keys,
// one confidential `client_secret_basic` app, resource indicators with JWT
// access tokens, refresh-token rotation on every refresh, organization tokens
// through the refresh grant, Logto's claims and userinfo.
// See README.md beside this file for how to run it and what it imitates.

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import * as util from 'node:util';

// stdout carries exactly one line, the READY line. oidc-provider prints its
// notices with console.info (and its warnings with console.warn): send
// everything but that line to stderr. This must happen before oidc-provider
// is loaded, because it warns about the runtime while being imported.
const toStderr = (...args) => { process.stderr.write(`${util.format(...args)}\n`); };
console.log = toStderr;
console.info = toStderr;
console.debug = toStderr;

const { default: Provider, errors } = await import('oidc-provider');
const { handler: builtinRefreshGrant, parameters: builtinRefreshParameters } = await import(
  // Not a public entry point: oidc-provider is pinned to an exact version in package.json.
  'oidc-provider/lib/actions/grants/refresh_token.js'
);
const grantHelpers = await import('oidc-provider/lib/helpers/grants.js');

// ---------------------------------------------------------------------------
// Configuration from the environment
// ---------------------------------------------------------------------------

const list = (value, fallback) => (value === undefined || value.trim() === ''
  ? fallback
  : value.split(',').map((s) => s.trim()).filter(Boolean));

const env = process.env;
const PORT = Number.parseInt(env.PORT ?? '0', 10);
const APP_ID = env.APP_ID || 'sample-app';
const APP_SECRET = env.APP_SECRET || 'sample-secret';
// A Logto "machine-to-machine" app: client credentials only, with its own roles.
const M2M_APP_ID = env.M2M_APP_ID || 'm2m-app';
const M2M_APP_SECRET = env.M2M_APP_SECRET || 'm2m-secret';
const REDIRECT_URIS = list(env.REDIRECT_URIS, ['http://localhost:8000/logto/sign-in-callback']);
// Both forms: the crate sends `base_url` written as a URL (`http://localhost:8000/`).
const POST_LOGOUT_REDIRECT_URIS = list(
  env.POST_LOGOUT_REDIRECT_URIS,
  ['http://localhost:8000/', 'http://localhost:8000'],
);
const SIGNING_ALG = (env.SIGNING_ALG || 'ES384').toUpperCase();
// Logto's "Unknown session redirect URL" (sign-in experience, advanced settings): where a
// browser that reaches a finished or unknown sign-in page (e.g. with Back) is sent.
const UNKNOWN_SESSION_REDIRECT_URL = env.UNKNOWN_SESSION_REDIRECT_URL || '';
// The host of the endpoint and issuer (`http://<host>:<port>/oidc`). It always listens on
// 127.0.0.1; `scripts/demo` sets `localhost`, as in Logto OSS's default endpoint.
const ISSUER_HOST = env.ISSUER_HOST || '127.0.0.1';
const LOG_REQUESTS = Boolean(env.LOG_REQUESTS);
const WATCH_STDIN = !env.PROVIDER_IGNORE_STDIN;
// Generated users for load runs (bench/scale): `load1` ... `loadN`, password `load-password`,
// each an admin (shopping and store scopes) and a member of org_acme (organization tokens).
const LOAD_USERS = Number.parseInt(env.LOAD_USERS ?? '0', 10);
if (!Number.isSafeInteger(LOAD_USERS) || LOAD_USERS < 0 || LOAD_USERS > 1_000_000) {
  throw new Error(`LOAD_USERS must be a number of users (0 to 1000000), not ${env.LOAD_USERS}`);
}
// oidc-provider's in-memory store keeps its 1,000 most recent entries (sessions, grants,
// tokens): in a load run, thousands of users would see their refresh tokens forgotten, which
// Logto (a database) never does. Load runs get a store with room for every entry instead.
let loadAdapter;
if (LOAD_USERS > 0) {
  const { default: MemoryAdapter } = await import('oidc-provider/lib/adapters/memory_adapter.js');
  const { default: LRU } = await import('oidc-provider/lib/helpers/lru.js');
  const store = new LRU({ maxSize: 10_000 + LOAD_USERS * 500 });
  loadAdapter = (model) => new MemoryAdapter(model, store);
}

if (!Number.isInteger(PORT) || PORT < 0 || PORT > 65535) {
  throw new Error(`PORT must be a port number or 0, not ${env.PORT}`);
}
if (!['127.0.0.1', 'localhost'].includes(ISSUER_HOST)) {
  throw new Error(`ISSUER_HOST must be 127.0.0.1 (the default) or localhost, not ${env.ISSUER_HOST}`);
}
if (!['ES384', 'RS256'].includes(SIGNING_ALG)) {
  throw new Error(`SIGNING_ALG must be ES384 (the default) or RS256, not ${env.SIGNING_ALG}`);
}

// ---------------------------------------------------------------------------
// The tenant's data: API resources, roles, organizations, users
// ---------------------------------------------------------------------------

const ORGANIZATIONS_RESOURCE = 'urn:logto:resource:organizations';
const ORGANIZATIONS_SCOPE = 'urn:logto:scope:organizations';
const ORGANIZATION_URN_PREFIX = 'urn:logto:organization:';
const SHOPPING = 'https://shopping.example.com/api';
const STORE = 'https://store.example.com/api';
/** Logto OSS's Management API resource indicator (Cloud's is https://<tenant-id>.logto.app/api). */
const MANAGEMENT_API = 'https://default.logto.app/api';

/** API resources and the scopes (permissions) each defines. */
const RESOURCES = {
  [SHOPPING]: ['shopping:read', 'shopping:write'],
  [STORE]: ['store:read', 'store:write'],
  // Organization permissions live on Logto's reserved organizations resource.
  [ORGANIZATIONS_RESOURCE]: ['read:members', 'invite:members'],
  // Logto's Management API, whose one scope is `all`.
  [MANAGEMENT_API]: ['all'],
};

/** User roles: the API-resource scopes each grants. */
const ROLES = {
  admin: { [SHOPPING]: ['shopping:read', 'shopping:write'], [STORE]: ['store:read', 'store:write'] },
  viewer: { [SHOPPING]: ['shopping:read'], [STORE]: ['store:read'] },
};

/** Organization roles: organization scopes, and API-resource scopes within the organization. */
const ORGANIZATION_ROLES = {
  admin: {
    organizationScopes: ['read:members', 'invite:members'],
    resourceScopes: { [SHOPPING]: ['shopping:read', 'shopping:write'] },
  },
  member: {
    organizationScopes: ['read:members'],
    resourceScopes: { [SHOPPING]: ['shopping:read'] },
  },
};

/** Machine-to-machine roles: the API-resource scopes the M2M app is granted. */
const MACHINE_SCOPES = { [SHOPPING]: ['shopping:read'], [MANAGEMENT_API]: ['all'] };

const ORGANIZATIONS = {
  org_acme: { name: 'Acme', description: 'Acme Corporation', members: { user_alice: ['admin'] } },
  org_globex: { name: 'Globex', description: 'Globex Corporation (no test user is a member)', members: {} },
};
// Carol is a member of 50 organizations, org_c01 to org_c50 (a session with many tokens).
for (let i = 1; i <= 50; i += 1) {
  const id = `org_c${String(i).padStart(2, '0')}`;
  ORGANIZATIONS[id] = { name: `Carol ${i}`, description: `Organization ${i} of carol`, members: { user_carol: ['member'] } };
}
// Dave is a member of 130 organizations whose ids are Logto's own shape (21 lowercase letters
// and digits, as its generateStandardId makes them; fixed from run to run): with every
// organization token, a session over 64 KiB before compression.
const standardId = (seed) => Array.from(
  crypto.createHash('sha256').update(seed).digest().subarray(0, 21),
  (byte) => '0123456789abcdefghijklmnopqrstuvwxyz'[byte % 36],
).join('');
for (let i = 1; i <= 130; i += 1) {
  ORGANIZATIONS[standardId(`dave ${i}`)] = {
    name: `Dave ${i}`, description: `Organization ${i} of dave`, members: { user_dave: ['member'] },
  };
}

const USERS = [
  {
    sub: 'user_alice',
    username: 'alice',
    password: 'alice-password',
    name: 'Alice Liddell',
    picture: null,
    given_name: 'Alice',
    family_name: 'Liddell',
    locale: 'en-US',
    email: 'alice@example.com',
    email_verified: true,
    phone_number: '+15550100001',
    phone_number_verified: true,
    address: {
      formatted: '1 Rabbit Hole, Oxford OX1 1AA, GB',
      street_address: '1 Rabbit Hole',
      locality: 'Oxford',
      postal_code: 'OX1 1AA',
      country: 'GB',
    },
    roles: ['admin'],
    custom_data: { plan: 'pro' },
    identities: {},
    sso_identities: [],
    created_at: 1700000000000,
    updated_at: 1700000600000,
  },
  {
    sub: 'user_bob',
    username: 'bob',
    password: 'bob-password',
    name: null,
    picture: null,
    email: 'bob@example.com',
    email_verified: true,
    phone_number: null,
    phone_number_verified: false,
    roles: ['viewer'],
    custom_data: {},
    identities: {},
    sso_identities: [],
    created_at: 1700000100000,
    updated_at: 1700000100000,
  },
  {
    sub: 'user_carol',
    username: 'carol',
    password: 'carol-password',
    name: 'Carol Many-Orgs',
    picture: null,
    email: 'carol@example.com',
    email_verified: true,
    phone_number: null,
    phone_number_verified: false,
    roles: ['admin'],
    custom_data: {},
    identities: {},
    sso_identities: [],
    created_at: 1700000200000,
    updated_at: 1700000200000,
  },
  {
    sub: 'user_dave',
    username: 'dave',
    password: 'dave-password',
    name: 'Dave More-Orgs',
    picture: null,
    email: 'dave@example.com',
    email_verified: true,
    phone_number: null,
    phone_number_verified: false,
    roles: ['admin'],
    custom_data: {},
    identities: {},
    sso_identities: [],
    created_at: 1700000300000,
    updated_at: 1700000300000,
  },
];
for (let i = 1; i <= LOAD_USERS; i += 1) {
  USERS.push({
    sub: `user_load${i}`,
    username: `load${i}`,
    password: 'load-password',
    name: `Load ${i}`,
    picture: null,
    email: `load${i}@example.com`,
    email_verified: true,
    phone_number: null,
    phone_number_verified: false,
    roles: ['admin'],
    custom_data: {},
    identities: {},
    sso_identities: [],
    created_at: 1700000400000,
    updated_at: 1700000400000,
  });
  ORGANIZATIONS.org_acme.members[`user_load${i}`] = ['member'];
}
const usersBySub = new Map(USERS.map((u) => [u.sub, u]));
const usersByName = new Map(USERS.map((u) => [u.username, u]));

const unique = (values) => [...new Set(values)];

function organizationRolesOf(sub, organizationId) {
  return ORGANIZATIONS[organizationId]?.members[sub] ?? [];
}

function organizationsOf(sub) {
  return Object.keys(ORGANIZATIONS).filter((id) => organizationRolesOf(sub, id).length > 0);
}

function isMember(sub, organizationId) {
  return Object.hasOwn(ORGANIZATIONS, organizationId) && organizationRolesOf(sub, organizationId).length > 0;
}

/** Scopes of `indicator` that the user's roles allow (organization scopes: across all their organizations). */
function permittedResourceScopes(sub, indicator) {
  const user = usersBySub.get(sub);
  if (!user) return [];
  if (indicator === ORGANIZATIONS_RESOURCE) {
    return unique(organizationsOf(sub).flatMap((id) => organizationScopesOf(sub, id)));
  }
  return unique(user.roles.flatMap((role) => ROLES[role]?.[indicator] ?? []));
}

/** Organization scopes the user's roles in one organization grant. */
function organizationScopesOf(sub, organizationId) {
  return unique(organizationRolesOf(sub, organizationId)
    .flatMap((role) => ORGANIZATION_ROLES[role]?.organizationScopes ?? []));
}

/** API-resource scopes the user's roles in one organization grant. */
function organizationResourceScopesOf(sub, organizationId, indicator) {
  return unique(organizationRolesOf(sub, organizationId)
    .flatMap((role) => ORGANIZATION_ROLES[role]?.resourceScopes[indicator] ?? []));
}

const OPTIONAL_PROFILE_CLAIMS = [
  'family_name', 'given_name', 'middle_name', 'nickname', 'preferred_username', 'profile',
  'website', 'gender', 'birthdate', 'zoneinfo', 'locale',
];

/** Every claim of the user; oidc-provider keeps those of the granted scopes. */
function claimsOf(user, use) {
  const organizations = organizationsOf(user.sub);
  const claims = {
    sub: user.sub,
    // profile: null when empty, never absent
    name: user.name || null,
    username: user.username || null,
    picture: user.picture || null,
    created_at: user.created_at,
    updated_at: user.updated_at,
    email: user.email || null,
    email_verified: Boolean(user.email_verified),
    phone_number: user.phone_number || null,
    phone_number_verified: Boolean(user.phone_number_verified),
    roles: user.roles,
    organizations,
    organization_roles: organizations.flatMap(
      (id) => organizationRolesOf(user.sub, id).map((role) => `${id}:${role}`),
    ),
  };
  // profile: the other standard claims only when not empty
  for (const key of OPTIONAL_PROFILE_CLAIMS) {
    if (user[key]) claims[key] = user[key];
  }
  if (user.address) claims.address = user.address;
  if (use === 'userinfo') {
    claims.custom_data = user.custom_data;
    claims.identities = user.identities;
    claims.sso_identities = user.sso_identities;
    claims.organization_data = organizations.map((id) => ({
      id, name: ORGANIZATIONS[id].name, description: ORGANIZATIONS[id].description,
    }));
  }
  return claims;
}

// ---------------------------------------------------------------------------
// Test-control state
// ---------------------------------------------------------------------------

const DEFAULT_ACCESS_TOKEN_TTL = 3600;
const state = {
  accessTokenTtl: DEFAULT_ACCESS_TOKEN_TTL,
  /** Delay before the token endpoint handles a request (a slow Logto), ms. */
  tokenDelayMs: 0,
  /** Drop a delayed token request unhandled when its client hung up during the delay (the
   * request never reached Logto's handler), instead of handling it anyway. */
  tokenDropIfGone: false,
  /** Hold the answer instead of the request: Logto has handled the request (rotated the
   * refresh token) and the answer is on its way. */
  tokenDelayAfterHandling: false,
  /** 'always': every refresh rotates the refresh token (the worst case, the default);
   * 'logto': Logto's own rule for a confidential app, a new refresh token only once 70% of
   * its lifetime has passed (oidc-provider's default rotation, which Logto keeps). */
  rotation: 'always',
  /** Answer introspection requests with 503 (Logto unreachable for that one question). */
  introspectionDown: false,
  /** The private signing key (JWK), to sign logout tokens like Logto would. */
  signingKey: undefined,
  /** sub -> grant ids ever saved for the app (a revoked grant is gone from the adapter). */
  grantsBySub: new Map(),
  /** Seconds to backdate the next completed login by (its `auth_time`), then 0 again. */
  nextLoginAge: 0,
};

function emptyStats() {
  return {
    token_requests: { authorization_code: 0, refresh_token: 0, client_credentials: 0 },
    /** Token requests received, counted on arrival (before any delay and handling). */
    token_requests_received: 0,
    refresh_by_resource: {},
    refresh_by_organization: {},
    revoked_grants: 0,
    /** Refresh grants by grant (one per sign-in: a session) and target (resource,
     * organization or the ID token), for load runs: how many refreshes each session made of
     * each of its tokens. */
    refresh_by_grant_target: {},
    /** Refresh requests refused (an unknown, expired or already used refresh token). */
    refresh_refused: 0,
    revocation_requests: 0,
    /** Introspection requests, and how many of them found the token active. */
    introspection_requests: 0,
    introspection_active: 0,
    /** Token requests dropped unhandled because their client hung up during the delay. */
    token_requests_dropped: 0,
    userinfo_requests: 0,
    /** Management API requests (`/api/...`), refused ones included. */
    management_api_requests: 0,
  };
}
let stats = emptyStats();
const bump = (object, key) => { object[key] = (object[key] ?? 0) + 1; };

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

function generateSigningKey(alg) {
  const { privateKey } = alg === 'RS256'
    ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
    : crypto.generateKeyPairSync('ec', { namedCurve: 'P-384' });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, alg, use: 'sig', kid: crypto.randomBytes(12).toString('base64url') };
}

// ---------------------------------------------------------------------------
// The provider
// ---------------------------------------------------------------------------

function buildProvider(issuer) {
  const alg = SIGNING_ALG;
  state.signingKey = generateSigningKey(alg);
  const jwtFormat = { accessTokenFormat: 'jwt', jwt: { sign: { alg } } };

  const configuration = {
    clients: [{
      client_id: M2M_APP_ID,
      client_secret: M2M_APP_SECRET,
      client_name: 'rocket_logto test machine-to-machine app',
      redirect_uris: [],
      grant_types: ['client_credentials'],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
    }, {
      client_id: APP_ID,
      client_secret: APP_SECRET,
      client_name: 'rocket_logto test app',
      redirect_uris: REDIRECT_URIS,
      post_logout_redirect_uris: POST_LOGOUT_REDIRECT_URIS,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: alg,
    }],
    clientDefaults: {
      grant_types: ['authorization_code', 'refresh_token'],
      id_token_signed_response_alg: alg,
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    jwks: { keys: [state.signingKey] },
    enabledJWA: { idTokenSigningAlgValues: [alg] },
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },

    scopes: [
      'openid', 'offline_access', 'profile', 'email', 'phone', 'address', 'custom_data',
      'identities', 'roles', ORGANIZATIONS_SCOPE, 'urn:logto:scope:organization_roles',
    ],
    claims: {
      openid: ['sub'],
      profile: ['name', 'username', 'picture', 'created_at', 'updated_at', ...OPTIONAL_PROFILE_CLAIMS],
      email: ['email', 'email_verified'],
      phone: ['phone_number', 'phone_number_verified'],
      address: ['address'],
      custom_data: ['custom_data'],
      identities: ['identities', 'sso_identities'],
      roles: ['roles'],
      [ORGANIZATIONS_SCOPE]: ['organizations', 'organization_data'],
      'urn:logto:scope:organization_roles': ['organization_roles'],
    },
    // Logto puts the claims of every granted scope in the ID token.
    conformIdTokenClaims: false,

    async findAccount(_ctx, sub) {
      const user = usersBySub.get(sub);
      if (!user) return undefined;
      return { accountId: sub, claims: async (use) => claimsOf(user, use) };
    },

    interactions: { url: async (_ctx, interaction) => `/interaction/${interaction.uid}` },

    // Logto's sign-in experience parameters, kept with the interaction so that the login
    // page can show which screen Logto would open (`first_screen`) and pre-fill `login_hint`.
    extraParams: ['first_screen', 'login_hint', 'direct_sign_in', 'organization_id', 'ui_locales', 'identifier'],

    features: {
      devInteractions: { enabled: false },
      dPoP: { enabled: false },
      pushedAuthorizationRequests: { enabled: false },
      revocation: {
        enabled: true,
        async allowedPolicy(_ctx, client, token) {
          if (token.clientId !== client.clientId) {
            throw new errors.InvalidRequest('client is not authorized to revoke the presented token');
          }
          return true;
        },
      },
      userinfo: { enabled: true },
      // Logto enables RFC 7662 introspection (a client may introspect its own tokens).
      introspection: { enabled: true },
      // Machine-to-machine tokens (`grant_type=client_credentials` + `resource` + `scope`).
      clientCredentials: { enabled: true },
      rpInitiatedLogout: { enabled: true }, // oidc-provider's own confirmation form
      resourceIndicators: {
        enabled: true,
        async defaultResource(_ctx, _client, oneOf) { return oneOf; },
        async useGrantedResource() { return false; },
        async getResourceServerInfo(ctx, indicator) {
          const defined = RESOURCES[indicator];
          if (!defined) throw new errors.InvalidTarget();
          let scopes = defined;
          // A machine-to-machine token: the scopes of the app's machine roles.
          if (ctx.oidc.route === 'token' && ctx.oidc.params?.grant_type === 'client_credentials') {
            scopes = defined.filter((scope) => (MACHINE_SCOPES[indicator] ?? []).includes(scope));
          }
          // organization_id + resource: a normal API token narrowed to the organization roles.
          const organizationId = ctx.oidc.route === 'token' ? ctx.oidc.params?.organization_id : undefined;
          const account = ctx.oidc.entities.Account;
          if (organizationId && account && indicator !== ORGANIZATIONS_RESOURCE) {
            scopes = organizationResourceScopesOf(account.accountId, organizationId, indicator);
          }
          return { scope: scopes.join(' '), ...jwtFormat };
        },
      },
    },

    async extraTokenClaims(ctx, token) {
      const organizationId = ctx?.oidc?.route === 'token' ? ctx.oidc.params?.organization_id : undefined;
      const audience = token.resourceServer?.audience ?? '';
      if (organizationId && token.resourceServer && !audience.startsWith(ORGANIZATION_URN_PREFIX)) {
        return { organization_id: organizationId };
      }
      return undefined;
    },

    pkce: { required: (_ctx, client) => client.clientAuthMethod === 'none' },
    rotateRefreshToken(ctx) {
      if (state.rotation === 'always') return true; // the worst case: every refresh rotates
      const { RefreshToken: token, Client: client } = ctx.oidc.entities;
      if (client.clientAuthMethod === 'none') return true;
      return token.ttlPercentagePassed() >= 70;
    },
    clientBasedCORS: () => false,

    ttl: {
      AccessToken: () => state.accessTokenTtl,
      AuthorizationCode: 60,
      ClientCredentials: () => state.accessTokenTtl,
      IdToken: 3600,
      Interaction: 3600,
      RefreshToken: 14 * 24 * 3600,
      Session: 14 * 24 * 3600,
      Grant: 14 * 24 * 3600,
    },
  };

  if (loadAdapter) configuration.adapter = loadAdapter;
  const provider = new Provider(issuer, configuration);
  registerRefreshGrant(provider);

  provider.on('grant.saved', (grant) => {
    if (grant.clientId !== APP_ID || !grant.accountId) return;
    if (!state.grantsBySub.has(grant.accountId)) state.grantsBySub.set(grant.accountId, new Set());
    state.grantsBySub.get(grant.accountId).add(grant.jti);
  });
  provider.on('grant.revoked', () => { stats.revoked_grants += 1; });
  provider.on('server_error', (_ctx, err) => { console.error('oidc-provider server_error:', err); });

  // Statistics of every request that reached the token, revocation and userinfo endpoints,
  // and Logto's `code` member in JSON error bodies.
  provider.use(async (ctx, next) => {
    if (ctx.method === 'POST' && ctx.path === '/token/introspection' && state.introspectionDown) {
      stats.introspection_requests += 1;
      ctx.status = 503;
      ctx.body = { error: 'temporarily_unavailable', error_description: 'introspection is down (test switch)' };
      return;
    }
    if (ctx.method === 'POST' && ctx.path === '/token') {
      stats.token_requests_received += 1;
      if (state.tokenDelayMs > 0 && !state.tokenDelayAfterHandling) {
        await new Promise((resolve) => { setTimeout(resolve, state.tokenDelayMs); });
      }
      if (state.tokenDropIfGone && (ctx.req.socket.destroyed || ctx.req.destroyed)) {
        stats.token_requests_dropped += 1;
        ctx.respond = false;
        return;
      }
    }
    await next();
    if (ctx.method === 'POST' && ctx.path === '/token' && state.tokenDelayMs > 0 && state.tokenDelayAfterHandling) {
      await new Promise((resolve) => { setTimeout(resolve, state.tokenDelayMs); });
    }
    const route = ctx._matchedRouteName;
    if (route === 'token') {
      let params;
      try { params = ctx.oidc.params; } catch { params = undefined; }
      const grantType = params?.grant_type ?? 'unknown';
      bump(stats.token_requests, grantType);
      if (grantType === 'refresh_token') {
        const resource = Array.isArray(params.resource) ? params.resource.join(' ') : params.resource;
        bump(stats.refresh_by_resource, resource || '');
        if (params.organization_id) bump(stats.refresh_by_organization, params.organization_id);
        if (ctx.status >= 400) stats.refresh_refused += 1;
        const grant = ctx.oidc.entities?.RefreshToken?.grantId ?? '?';
        const target = params.organization_id ? `org:${params.organization_id}` : (resource || 'id');
        if (ctx.status < 400) bump(stats.refresh_by_grant_target, `${grant} ${target}`);
      }
    } else if (route === 'revocation') {
      stats.revocation_requests += 1;
    } else if (route === 'introspection') {
      stats.introspection_requests += 1;
      if (ctx.body?.active === true) stats.introspection_active += 1;
    } else if (route === 'userinfo') {
      stats.userinfo_requests += 1;
    }
    const { body } = ctx;
    if (body && typeof body === 'object' && !Buffer.isBuffer(body) && typeof body.pipe !== 'function'
      && typeof body.error === 'string' && body.code === undefined) {
      ctx.body = { code: `oidc.${body.error}`, ...body };
    }
  });

  return provider;
}

/**
 * The refresh_token grant of oidc-provider, extended with Logto's organization tokens:
 * - `organization_id` without `resource`: a JWT with `aud = urn:logto:organization:<id>` and the
 *   organization-role scopes (those of them the grant asked for);
 * - `organization_id` with `resource`: the built-in resource token, narrowed to the organization
 *   roles (getResourceServerInfo) with an `organization_id` claim (extraTokenClaims);
 * - a non-member gets 403 access_denied, a refresh token without the organizations scope
 *   insufficient_scope.
 * Everything else (rotation, reuse detection that revokes the grant, resource tokens) is the
 * built-in handler.
 */
function registerRefreshGrant(provider) {
  const helpers = Object.fromEntries(
    Object.entries(grantHelpers).map(([name, helper]) => [name, helper.bind(undefined, provider)]),
  );
  const builtin = (ctx) => builtinRefreshGrant(provider, helpers, ctx);

  async function refreshTokenGrant(ctx) {
    const { params, client } = ctx.oidc;
    const organizationId = params.organization_id;
    if (!organizationId) {
      await builtin(ctx);
      return;
    }

    // The organization checks, on a refresh token the built-in handler would accept. Any other
    // refresh token (unknown, expired, rotated out, of a revoked grant) goes to the built-in
    // handler as it is, so that it fails the same way (and a reuse revokes the grant).
    const refreshToken = params.refresh_token
      ? await provider.RefreshToken.find(params.refresh_token, { ignoreExpiration: true })
      : undefined;
    if (refreshToken && refreshToken.clientId === client.clientId && !refreshToken.isExpired
      && !refreshToken.consumed && await provider.Grant.find(refreshToken.grantId)) {
      if (!isMember(refreshToken.accountId, organizationId)) {
        const error = new errors.AccessDenied('user is not a member of the organization');
        error.status = 403;
        error.statusCode = 403;
        throw error;
      }
      if (!refreshToken.scopes.has(ORGANIZATIONS_SCOPE)) {
        throw new errors.InsufficientScope('refresh token missing required scope', ORGANIZATIONS_SCOPE);
      }
    }

    await builtin(ctx);

    if (params.resource) return; // a resource token narrowed to the organization

    // An organization token: replace the access token the built-in handler issued (an opaque
    // userinfo token) with a JWT for the organization.
    const issued = ctx.oidc.entities.AccessToken;
    const rotated = ctx.oidc.entities.RefreshToken;
    const requested = params.scope ? ctx.oidc.requestParamScopes : rotated.scopes;
    const available = organizationScopesOf(issued.accountId, organizationId);
    const audience = `${ORGANIZATION_URN_PREFIX}${organizationId}`;

    const at = new provider.AccessToken({
      accountId: issued.accountId,
      client,
      expiresWithSession: issued.expiresWithSession,
      grantId: issued.grantId,
      gty: issued.gty,
      sessionUid: issued.sessionUid,
      sid: issued.sid,
    });
    at.resourceServer = new provider.ResourceServer(audience, {
      audience,
      scope: available.join(' '),
      accessTokenFormat: 'jwt',
      jwt: { sign: { alg: SIGNING_ALG } },
    });
    at.scope = available.filter((scope) => requested.has(scope)).join(' ');
    ctx.oidc.entity('AccessToken', at);
    const value = await at.save();
    await issued.destroy();

    ctx.body = {
      ...ctx.body,
      access_token: value,
      expires_in: at.expiration,
      scope: at.scope,
    };
  }

  // One refresh at a time per refresh token, so that the outcome of parallel refreshes with the
  // same token is deterministic: the first wins, every later one finds it rotated out (and
  // revokes the grant), as on a real Logto server.
  const queues = new Map();
  async function oneAtATime(ctx) {
    const key = String(ctx.oidc.params.refresh_token ?? '');
    const previous = queues.get(key) ?? Promise.resolve();
    let release;
    const mine = new Promise((resolve) => { release = resolve; });
    const tail = previous.then(() => mine);
    queues.set(key, tail);
    await previous;
    try {
      await refreshTokenGrant(ctx);
    } finally {
      release();
      if (queues.get(key) === tail) queues.delete(key);
    }
  }

  provider.registerGrantType(
    'refresh_token',
    oneAtATime,
    [...builtinRefreshParameters, 'resource', 'organization_id'],
    ['resource'],
  );
}

// ---------------------------------------------------------------------------
// Interactions: the login form, and consent granted without a screen (first-party app)
// ---------------------------------------------------------------------------

const escapeHtml = (value) => String(value).replace(/[&<>"']/g, (c) => ({
  '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
})[c]);

/**
 * The login form. With `first_screen=register` it is titled as Logto's registration screen
 * (this provider has no accounts to create, so the form still signs an existing user in).
 */
function loginPage(uid, { username = '', error, register = false } = {}) {
  const title = register ? 'Create your account' : 'Sign in';
  return `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>${title}</title></head>
<body>
  <h1 id="${register ? 'register' : 'sign-in'}">${title}</h1>
  ${error ? `<p id="error" class="error" role="alert">${escapeHtml(error)}</p>` : ''}
  <form method="post" action="/interaction/${escapeHtml(uid)}/login" autocomplete="off">
    <label for="username">Username</label>
    <input id="username" name="username" type="text" value="${escapeHtml(username)}" autofocus>
    <label for="password">Password</label>
    <input id="password" name="password" type="password">
    <button id="submit" type="submit">Sign in</button>
  </form>
</body>
</html>
`;
}

function send(res, status, body, type = 'text/html; charset=utf-8') {
  res.statusCode = status;
  res.setHeader('Content-Type', type);
  res.setHeader('Cache-Control', 'no-store');
  res.end(body);
}

const sendJson = (res, status, value) => send(res, status, JSON.stringify(value), 'application/json; charset=utf-8');

async function readBody(req, limit = 64 * 1024) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw new Error('request body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Grant everything the app asked for that the user's roles allow, without a consent screen. */
async function autoConsent(provider, interaction) {
  const { prompt: { details }, params, session: { accountId } } = interaction;
  let grant = interaction.grantId ? await provider.Grant.find(interaction.grantId) : undefined;
  grant ??= new provider.Grant({ accountId, clientId: params.client_id });

  if (details.missingOIDCScope) grant.addOIDCScope(details.missingOIDCScope.join(' '));
  if (details.missingOIDCClaims) grant.addOIDCClaims(details.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(details.missingResourceScopes ?? {})) {
    const permitted = new Set(permittedResourceScopes(accountId, indicator));
    const granted = scopes.filter((scope) => permitted.has(scope));
    const rejected = scopes.filter((scope) => !permitted.has(scope));
    if (granted.length) grant.addResourceScope(indicator, granted.join(' '));
    if (rejected.length) grant.rejectResourceScope(indicator, rejected.join(' '));
  }
  return grant.save();
}

async function handleInteraction(provider, req, res, uid, action) {
  let interaction;
  try {
    interaction = await provider.interactionDetails(req, res);
  } catch (err) {
    if (UNKNOWN_SESSION_REDIRECT_URL) {
      res.writeHead(302, { Location: UNKNOWN_SESSION_REDIRECT_URL, 'Cache-Control': 'no-store' });
      res.end();
      return;
    }
    send(res, 400, `<!DOCTYPE html><html><body><h1>Sign-in session not found</h1><p>${escapeHtml(err.message)}</p></body></html>`);
    return;
  }
  if (interaction.uid !== uid) {
    send(res, 400, '<!DOCTYPE html><html><body><h1>Interaction mismatch</h1></body></html>');
    return;
  }
  const { prompt } = interaction;

  if (prompt.name === 'consent') {
    const grantId = await autoConsent(provider, interaction);
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    return;
  }

  if (prompt.name !== 'login') {
    send(res, 400, `<!DOCTYPE html><html><body><h1>Unsupported prompt ${escapeHtml(prompt.name)}</h1></body></html>`);
    return;
  }

  if (action === undefined && req.method === 'GET') {
    const { params } = interaction;
    send(res, 200, loginPage(uid, {
      username: params.login_hint ?? '',
      register: params.first_screen === 'register',
    }));
    return;
  }
  if (action === 'login' && req.method === 'POST') {
    const form = new URLSearchParams(await readBody(req));
    const username = form.get('username') ?? '';
    const password = form.get('password') ?? '';
    const user = usersByName.get(username);
    if (!user || user.password !== password) {
      send(res, 200, loginPage(uid, { username, error: 'Incorrect username or password.' }));
      return;
    }
    // A login backdated by `/__test/next-login-age`: a session that old, without waiting.
    const age = state.nextLoginAge;
    state.nextLoginAge = 0;
    const ts = age > 0 ? Math.floor(Date.now() / 1000) - age : undefined;
    await provider.interactionFinished(
      req,
      res,
      { login: { accountId: user.sub, amr: ['pwd'], ...(ts === undefined ? {} : { ts }) } },
      { mergeWithLastSubmission: false },
    );
    return;
  }
  send(res, 405, 'method not allowed', 'text/plain; charset=utf-8');
}

// ---------------------------------------------------------------------------
// A sliver of Logto's Management API: GET /api/users/:id/roles, for a machine-to-machine
// token of the Management API with the scope `all`
// ---------------------------------------------------------------------------

/** The claims of a Management API token signed by this provider, or why it is refused. */
function verifyManagementToken(req) {
  const match = /^Bearer ([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)$/.exec(req.headers.authorization ?? '');
  if (!match) return { error: 'a bearer token is required' };
  const [, header, payload, signature] = match;
  const jwk = state.signingKey;
  const key = crypto.createPublicKey(crypto.createPrivateKey({ key: jwk, format: 'jwk' }));
  const data = Buffer.from(`${header}.${payload}`);
  const sig = Buffer.from(signature, 'base64url');
  const valid = jwk.alg === 'RS256'
    ? crypto.verify('sha256', data, key, sig)
    : crypto.verify('sha384', data, { key, dsaEncoding: 'ieee-p1363' }, sig);
  if (!valid) return { error: 'bad signature' };
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
  if (claims.aud !== MANAGEMENT_API) return { error: `audience ${claims.aud} is not the Management API` };
  if (!(claims.exp > Math.floor(Date.now() / 1000))) return { error: 'expired' };
  if (!String(claims.scope ?? '').split(' ').includes('all')) return { error: 'the scope `all` is missing' };
  return { claims };
}

function handleManagementApi(req, res, url) {
  stats.management_api_requests += 1;
  const roles = /^\/api\/users\/([^/]+)\/roles$/.exec(url.pathname);
  if (!roles || req.method !== 'GET') {
    sendJson(res, 404, { code: 'guard.not_found', message: 'not found' });
    return;
  }
  const { error } = verifyManagementToken(req);
  if (error) {
    res.setHeader('WWW-Authenticate', `Bearer error="invalid_token", error_description="${error}"`);
    sendJson(res, 401, { code: 'auth.unauthorized', message: error });
    return;
  }
  const user = usersBySub.get(decodeURIComponent(roles[1]));
  if (!user) {
    sendJson(res, 404, { code: 'entity.not_exists_with_id', message: 'no such user' });
    return;
  }
  sendJson(res, 200, (user.roles ?? []).map((name) => ({
    id: `role_${name}`, name, description: `The ${name} role`, type: 'User',
  })));
}

// ---------------------------------------------------------------------------
// Test-control endpoints (/__test/...)
// ---------------------------------------------------------------------------

const isLoopback = (address) => address === '127.0.0.1' || address === '::1'
  || address === '::ffff:127.0.0.1' || (address ?? '').startsWith('127.');

async function grantValid(provider, sub) {
  for (const grantId of state.grantsBySub.get(sub) ?? []) {
    const grant = await provider.Grant.find(grantId);
    if (grant && grant.clientId === APP_ID) return true;
  }
  return false;
}

/** A back-channel logout token for the app, signed with the provider's key, as Logto sends. */
function signLogoutToken(issuer, { sub, sid }) {
  const jwk = state.signingKey;
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    iss: issuer,
    aud: APP_ID,
    iat: now,
    exp: now + 120,
    jti: crypto.randomBytes(16).toString('base64url'),
    events: { 'http://schemas.openid.net/event/backchannel-logout': {} },
  };
  if (typeof sub === 'string') claims.sub = sub;
  if (typeof sid === 'string') claims.sid = sid;
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const input = `${encode({ alg: jwk.alg, kid: jwk.kid, typ: 'logout+jwt' })}.${encode(claims)}`;
  const key = crypto.createPrivateKey({ key: jwk, format: 'jwk' });
  const signature = jwk.alg === 'RS256'
    ? crypto.sign('sha256', Buffer.from(input), key)
    : crypto.sign('sha384', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
  return `${input}.${signature.toString('base64url')}`;
}

async function handleTestControl(provider, req, res, url) {
  if (!isLoopback(req.socket.remoteAddress)) {
    sendJson(res, 403, { error: 'test-control endpoints are loopback only' });
    return;
  }
  const route = `${req.method} ${url.pathname}`;
  switch (route) {
    case 'GET /__test/stats':
      sendJson(res, 200, stats);
      return;
    case 'POST /__test/reset-stats':
      stats = emptyStats();
      sendJson(res, 200, stats);
      return;
    case 'POST /__test/access-token-ttl': {
      let seconds;
      try {
        ({ seconds } = JSON.parse((await readBody(req)) || '{}'));
      } catch {
        seconds = undefined;
      }
      if (!Number.isSafeInteger(seconds) || seconds <= 0) {
        sendJson(res, 400, { error: 'expected JSON {"seconds": <positive integer>}' });
        return;
      }
      state.accessTokenTtl = seconds;
      sendJson(res, 200, { seconds });
      return;
    }
    case 'POST /__test/next-login-age': {
      let seconds;
      try {
        ({ seconds } = JSON.parse((await readBody(req)) || '{}'));
      } catch {
        seconds = undefined;
      }
      if (!Number.isSafeInteger(seconds) || seconds < 0) {
        sendJson(res, 400, { error: 'expected JSON {"seconds": <integer >= 0>}' });
        return;
      }
      state.nextLoginAge = seconds;
      sendJson(res, 200, { seconds });
      return;
    }
    case 'POST /__test/token-delay': {
      let ms;
      let dropIfGone;
      let afterHandling;
      try {
        ({ ms, drop_if_gone: dropIfGone = false, after_handling: afterHandling = false } = JSON.parse((await readBody(req)) || '{}'));
      } catch {
        ms = undefined;
      }
      if (!Number.isSafeInteger(ms) || ms < 0 || typeof dropIfGone !== 'boolean' || typeof afterHandling !== 'boolean'
        || (dropIfGone && afterHandling)) {
        sendJson(res, 400, { error: 'expected JSON {"ms": <integer >= 0>, and at most one of "drop_if_gone": true, "after_handling": true}' });
        return;
      }
      state.tokenDelayMs = ms;
      state.tokenDropIfGone = dropIfGone;
      state.tokenDelayAfterHandling = afterHandling;
      sendJson(res, 200, { ms, drop_if_gone: dropIfGone, after_handling: afterHandling });
      return;
    }
    case 'POST /__test/introspection': {
      let down;
      try {
        ({ down } = JSON.parse((await readBody(req)) || '{}'));
      } catch {
        down = undefined;
      }
      if (typeof down !== 'boolean') {
        sendJson(res, 400, { error: 'expected JSON {"down": true | false}' });
        return;
      }
      state.introspectionDown = down;
      sendJson(res, 200, { down });
      return;
    }
    case 'POST /__test/rotation': {
      let mode;
      try {
        ({ mode } = JSON.parse((await readBody(req)) || '{}'));
      } catch {
        mode = undefined;
      }
      if (mode !== 'always' && mode !== 'logto') {
        sendJson(res, 400, { error: 'expected JSON {"mode": "always" | "logto"}' });
        return;
      }
      state.rotation = mode;
      sendJson(res, 200, { mode });
      return;
    }
    case 'POST /__test/logout-token': {
      let body;
      try {
        body = JSON.parse((await readBody(req)) || '{}');
      } catch {
        body = {};
      }
      if (typeof body.sub !== 'string' && typeof body.sid !== 'string') {
        sendJson(res, 400, { error: 'expected JSON {"sub": "...", "sid": "..."} with one or both' });
        return;
      }
      sendJson(res, 200, { logout_token: signLogoutToken(provider.issuer, body) });
      return;
    }
    case 'POST /__test/custom-data': {
      // Logto's Management API `PATCH /api/users/{userId}/custom-data`, which replaces a
      // user's custom data; the next userinfo answer carries it.
      let body;
      try {
        body = JSON.parse((await readBody(req, 1024 * 1024)) || '{}');
      } catch {
        body = {};
      }
      const user = usersBySub.get(body.sub);
      const customData = body.custom_data;
      if (!user || typeof customData !== 'object' || customData === null || Array.isArray(customData)) {
        sendJson(res, 400, { error: 'expected JSON {"sub": "<a user\'s sub>", "custom_data": {...}}' });
        return;
      }
      user.custom_data = customData;
      sendJson(res, 200, { sub: user.sub, bytes: JSON.stringify(customData).length });
      return;
    }
    case 'GET /__test/grant-valid': {
      const sub = url.searchParams.get('sub') ?? '';
      sendJson(res, 200, { sub, valid: await grantValid(provider, sub) });
      return;
    }
    default:
      sendJson(res, 404, { error: `no test-control endpoint ${route}` });
  }
}

// ---------------------------------------------------------------------------
// HTTP server
// ---------------------------------------------------------------------------

let provider;
let providerCallback;

async function route(req, res) {
  const url = new URL(req.url, 'http://127.0.0.1');
  const { pathname } = url;

  if (pathname === '/oidc' || pathname.startsWith('/oidc/')) {
    // Mount oidc-provider under /oidc (the issuer's path), like Logto.
    req.originalUrl = req.url;
    req.url = req.url.slice('/oidc'.length) || '/';
    await providerCallback(req, res);
    return;
  }

  const interaction = /^\/interaction\/([^/]+)(?:\/(login))?\/?$/.exec(pathname);
  if (interaction) {
    await handleInteraction(provider, req, res, interaction[1], interaction[2]);
    return;
  }

  if (pathname.startsWith('/__test/')) {
    await handleTestControl(provider, req, res, url);
    return;
  }

  if (pathname.startsWith('/api/')) {
    handleManagementApi(req, res, url);
    return;
  }

  send(res, 404, 'not found', 'text/plain; charset=utf-8');
}

const server = http.createServer((req, res) => {
  if (LOG_REQUESTS) {
    res.on('finish', () => console.error(`${req.method} ${req.originalUrl ?? req.url} -> ${res.statusCode}`));
  }
  route(req, res).catch((err) => {
    console.error('request failed:', err);
    if (!res.headersSent) send(res, 500, 'internal error', 'text/plain; charset=utf-8');
    else res.destroy();
  });
});

let stopping = false;
function shutdown(reason) {
  if (stopping) return;
  stopping = true;
  console.error(`test provider: stopping (${reason})`);
  server.close();
  server.closeAllConnections?.();
  process.exit(0);
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
if (WATCH_STDIN) {
  // The parent test keeps our stdin open; when it dies, stdin closes and we go too.
  process.stdin.on('end', () => shutdown('stdin closed'));
  process.stdin.on('close', () => shutdown('stdin closed'));
  process.stdin.on('error', () => shutdown('stdin error'));
  process.stdin.resume();
}

server.listen(PORT, '127.0.0.1', () => {
  const { port } = server.address();
  const endpoint = `http://${ISSUER_HOST}:${port}`;
  provider = buildProvider(`${endpoint}/oidc`);
  providerCallback = provider.callback();
  process.stdout.write(`LOGTO_TEST_PROVIDER_READY ${endpoint}\n`);
});
