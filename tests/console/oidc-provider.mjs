// An OpenID Connect provider on loopback for the single sign-on tests: panva's oidc-provider
// (certified), with its development login form (any password; the login names the account).
// Configured by one JSON argument:
//   {"port", "clients": [{"client_id", "client_secret"?, "redirect_uris"}],
//    "accounts": {"<login>": {"email", "email_verified", "given_name", "family_name"}},
//    "key": <a private JWK to sign ID tokens with; rotating it is restarting with another>}
// `POST /test/tamper?mode=<audience|expired|signature|nonce>` spoils the next ID token the
// token endpoint hands out (and only that one), re-signed so that exactly one check fails: a
// certified provider never sends such tokens, and the tests must see each refused.
// Prints "ready <issuer>" once it listens. Ends with its parent's stdin (the test dropped it).
import { createPrivateKey, generateKeyPairSync, sign } from "node:crypto";
import Provider from "oidc-provider";

const config = JSON.parse(process.argv[2]);
const issuer = `http://127.0.0.1:${config.port}`;

const provider = new Provider(issuer, {
  clients: config.clients.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    redirect_uris: c.redirect_uris,
    grant_types: ["authorization_code"],
    response_types: ["code"],
    token_endpoint_auth_method: c.client_secret ? "client_secret_basic" : "none",
  })),
  jwks: { keys: [config.key] },
  claims: {
    openid: ["sub"],
    email: ["email", "email_verified"],
    profile: ["given_name", "family_name", "name"],
  },
  // The claims asked for by scope go into the ID token too (as Entra ID and Google do).
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  async findAccount(ctx, id) {
    const claims = config.accounts[id];
    if (!claims) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, ...claims }) };
  },
  // No consent screen: the tests sign in, they do not review grants.
  async loadExistingGrant(ctx) {
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope("openid email profile");
    await grant.save();
    return grant;
  },
  ttl: { Session: 600, Interaction: 600, Grant: 600, AccessToken: 600, AuthorizationCode: 60, IdToken: 600 },
});
provider.proxy = false;

// The provider's own failures, in the test's output.
provider.on("server_error", (ctx, err) => console.error("oidc-provider server_error:", err));

let tamper = null;
provider.use(async (ctx, next) => {
  if (ctx.method === "POST" && ctx.path === "/test/tamper") {
    tamper = ctx.query.mode;
    ctx.status = 204;
    return;
  }
  await next();
  if (ctx.path === "/token" && tamper && ctx.body && ctx.body.id_token) {
    ctx.body = { ...ctx.body, id_token: spoil(ctx.body.id_token, tamper) };
    tamper = null;
  }
});

function spoil(jwt, mode) {
  const [h, p] = jwt.split(".");
  const header = JSON.parse(Buffer.from(h, "base64url"));
  const claims = JSON.parse(Buffer.from(p, "base64url"));
  let key = createPrivateKey({ key: config.key, format: "jwk" });
  if (mode === "audience") claims.aud = "someone-else";
  else if (mode === "expired") {
    claims.iat -= 1200;
    claims.exp = claims.iat + 600;
  } else if (mode === "nonce") claims.nonce = "not-the-one-asked-for";
  else if (mode === "signature") {
    key = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey;
  } else throw new Error(`unknown tamper mode ${mode}`);
  const input = `${Buffer.from(JSON.stringify(header)).toString("base64url")}.${Buffer.from(
    JSON.stringify(claims),
  ).toString("base64url")}`;
  return `${input}.${sign("sha256", Buffer.from(input), key).toString("base64url")}`;
}

const server = provider.listen(config.port, "127.0.0.1", () => {
  console.log(`ready ${issuer}`);
});
process.stdin.on("end", () => server.close(() => process.exit(0)));
process.stdin.resume();
