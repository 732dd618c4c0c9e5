// A certified OpenID provider (npm oidc-provider) for medcloud's sign-in tests, on 127.0.0.1 only.
//
//   node provider.mjs '{"ports": [P1, P2], "clients": [...], "accounts": {...}}'
//
// Starts one provider per port, all signing with the same freshly made RSA key (so that an ID token
// from the second issuer carries a signature the first one's key set accepts: only the `iss` check can
// refuse it). Configured like a hospital's Keycloak: refresh tokens without offline_access, consent
// given by the hospital for its own applications, a login form. Test-only endpoints under /test-admin/
// change a person's groups, disable an account, revoke all of a person's grants at the provider, and
// rotate the signing key.
// Prints one line `READY <issuer> ...` when every provider listens.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import Provider from 'oidc-provider';

const config = JSON.parse(process.argv[2]);
const cookieKeys = [randomBytes(16).toString('hex')];
function newSigningKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: `k-${randomBytes(4).toString('hex')}`, use: 'sig', alg: 'RS256' };
}
let jwk = newSigningKey();
const accounts = config.accounts; // id -> { password, groups, disabled? }
const grantsByAccount = new Map(); // id -> Set of grant ids (every provider)

function html(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8') || 'null');
}

function makeProvider(issuer) {
  const provider = new Provider(issuer, {
    clients: config.clients,
    jwks: { keys: [jwk] },
    cookies: { keys: cookieKeys },
    claims: {
      openid: ['sub'],
      profile: ['preferred_username', 'name', 'groups'],
      email: ['email', 'email_verified'],
    },
    scopes: ['openid', 'offline_access', 'profile', 'email'],
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true },
      rpInitiatedLogout: { enabled: true },
    },
    pkce: { required: () => true },
    // Like Keycloak: a client allowed the refresh_token grant gets one, bound to the provider session.
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    ttl: {
      AccessToken: config.accessTokenSeconds ?? 300,
      AuthorizationCode: 60,
      IdToken: 300,
      RefreshToken: 3600,
      Grant: 3600,
      Session: 3600,
      Interaction: 600,
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    async findAccount(ctx, id) {
      const account = accounts[id];
      if (!account || account.disabled) return undefined;
      return {
        accountId: id,
        async claims() {
          return {
            sub: id, preferred_username: id, name: id, email: `${id}@hospital.example`, email_verified: true,
            groups: [...account.groups],
          };
        },
      };
    },
  });

  const remember = (token) => {
    if (token.accountId && token.grantId) {
      if (!grantsByAccount.has(token.accountId)) grantsByAccount.set(token.accountId, new Map());
      grantsByAccount.get(token.accountId).set(token.grantId, provider);
    }
  };
  provider.on('authorization_code.saved', remember);
  provider.on('refresh_token.saved', remember);

  provider.use(async (ctx, next) => {
    const m = ctx.path.match(/^\/interaction\/([^/]+)(\/login)?$/);
    if (m) {
      const details = await provider.interactionDetails(ctx.req, ctx.res);
      const { prompt, params } = details;
      if (prompt.name === 'consent') {
        // The hospital consents for its own applications (no consent screen), as a first-party client.
        const grant = details.grantId
          ? await provider.Grant.find(details.grantId)
          : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
        if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
        if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
        const grantId = await grant.save();
        const to = await provider.interactionResult(ctx.req, ctx.res, { consent: { grantId } }, { mergeWithLastSubmission: true });
        ctx.redirect(to);
        return;
      }
      if (ctx.method === 'POST' && m[2]) {
        const form = await readForm(ctx.req);
        const login = form.get('login') || '';
        const account = accounts[login];
        if (!account || account.disabled || account.password !== form.get('password')) {
          ctx.status = 200;
          ctx.type = 'html';
          ctx.body = `<p>Invalid login.</p><form method="post" action="/interaction/${html(m[1])}/login">`
            + '<input name="login"><input name="password" type="password"><button>Sign in</button></form>';
          return;
        }
        const to = await provider.interactionResult(ctx.req, ctx.res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
        ctx.redirect(to);
        return;
      }
      ctx.type = 'html';
      ctx.body = `<h1>Hospital sign-in</h1><form method="post" action="/interaction/${html(m[1])}/login">`
        + '<input name="login"><input name="password" type="password"><button>Sign in</button></form>';
      return;
    }
    if (ctx.method === 'POST' && ctx.path === '/test-admin/rotate') {
      // A key rotation: every issuer signs with a new key and publishes only that one from now on. The
      // providers are made again around the same (module-wide) store: grants and sessions survive.
      jwk = newSigningKey();
      for (const issuer of Object.keys(current)) current[issuer] = makeHandler(issuer);
      ctx.body = { ok: true, kid: jwk.kid };
      return;
    }
    if (ctx.path.startsWith('/test-admin/')) {
      const id = ctx.query.account;
      if (!accounts[id]) { ctx.status = 404; return; }
      if (ctx.method === 'POST' && ctx.path === '/test-admin/groups') {
        accounts[id].groups = await readJson(ctx.req);
      } else if (ctx.method === 'POST' && ctx.path === '/test-admin/disable') {
        accounts[id].disabled = true;
      } else if (ctx.method === 'POST' && ctx.path === '/test-admin/revoke') {
        // What an administrator does at the provider: every grant of this person, and its tokens, revoked.
        for (const [grantId, owner] of grantsByAccount.get(id) ?? []) {
          await Promise.all([owner.AccessToken, owner.RefreshToken, owner.AuthorizationCode]
            .map((model) => model.revokeByGrantId(grantId)));
          await owner.Grant.adapter.destroy(grantId);
        }
        grantsByAccount.delete(id);
      } else { ctx.status = 404; return; }
      ctx.body = { ok: true };
      return;
    }
    await next();
  });
  return provider;
}

const current = {}; // issuer -> request handler of its provider now
function makeHandler(issuer) {
  return makeProvider(issuer).callback();
}
const issuers = [];
for (const port of config.ports) {
  const issuer = `http://127.0.0.1:${port}`;
  current[issuer] = makeHandler(issuer);
  await new Promise((resolve, reject) => {
    const server = createServer((req, res) => current[issuer](req, res));
    server.on('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  issuers.push(issuer);
}
process.stdout.write(`READY ${issuers.join(' ')}\n`);
