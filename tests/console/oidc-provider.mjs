// An OpenID Connect provider on loopback for the single sign-on tests: panva's oidc-provider
// (certified), with its development login form (any password; the login names the account).
// Configured by one JSON argument:
//   {"port", "clients": [{"client_id", "client_secret"?, "redirect_uris"}],
//    "accounts": {"<login>": {"email", "email_verified", "given_name", "family_name"}},
//    "key": <a private JWK to sign ID tokens with; rotating it is restarting with another>}
// Prints "ready <issuer>" once it listens. Ends with its parent's stdin (the test dropped it).
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

const server = provider.listen(config.port, "127.0.0.1", () => {
  console.log(`ready ${issuer}`);
});
process.stdin.on("end", () => server.close(() => process.exit(0)));
process.stdin.resume();
