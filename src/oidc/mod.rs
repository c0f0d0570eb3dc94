//! Everything that talks to Logto or checks what it signed: discovery, the signing keys,
//! JWT checks (the signatures themselves in `signature`, with aws-lc-rs), and the token,
//! userinfo and revocation calls. It knows no Rocket request, cookie or session, and imports
//! nothing from `session`, `store` or `tokens`.

pub(crate) mod discovery;
pub(crate) mod jwks;
pub(crate) mod jwt;
pub(crate) mod provider;
pub(crate) mod signature;
