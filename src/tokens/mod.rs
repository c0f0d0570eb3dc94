//! Tokens shared by the requests of one user and by the instances of the app: refresh
//! coordination (one refresh per refresh token, rotations, tokens never to be sent again)
//! and the records of ended sessions (sign-outs and back-channel logouts); and the app's own
//! tokens (`client_credentials`), shared the same way. It reaches Logto
//! through `oidc` and the other instances through `store`, and knows no Rocket request.

pub(crate) mod client_credentials;
pub(crate) mod logout;
pub(crate) mod refresh;
