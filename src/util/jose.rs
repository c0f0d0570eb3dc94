//! Reading a JWT without checking it, for the layers that hold tokens verified before
//! (the session's ID token) or tokens this client only reads (access tokens it received
//! itself). Checking signatures is `oidc::jwt`'s job alone.

use base64::Engine as _;
use serde::de::DeserializeOwned;

/// Decodes a JWT's payload without checking it: only for tokens that were verified before
/// (the stored ID token) or that this client only reads (access tokens it received itself).
pub(crate) fn decode_jwt_payload<T: DeserializeOwned>(jwt: &str) -> Result<T, ()> {
    let payload = jwt.split('.').nth(1).ok_or(())?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| ())?;
    serde_json::from_slice(&bytes).map_err(|_| ())
}
