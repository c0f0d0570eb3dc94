//! The ID token's claims inside the session bytes, in a binary layout.
//!
//! A request whose cookies this instance has not cached reads the claims before anything
//! else. Parsing them from the ID token's JSON payload cost about 1.2 µs (serde_json
//! scanning every string, `#[serde(flatten)]` buffering the unknown ones); reading this
//! layout costs the allocations of the strings and little more. The payload stays in the
//! session too (the ID token is sent back as `id_token_hint`), and LZ4 stores the repeated
//! strings as back references, so the cookie grows by a few dozen bytes.
//!
//! The layout is the fields of [`IdTokenClaims`] in declaration order; claims the struct
//! does not name (`extra`) are kept as the JSON text of their map, which is usually short
//! (`nonce`, `at_hash`) and read only when present.

use serde_json::{Map, Value};

use super::{put_bytes, put_len, put_opt, put_optional, Reader};
use crate::claims::{Address, IdTokenClaims, ProfileClaims};

/// Appends `claims` in the binary layout.
pub(super) fn put(out: &mut Vec<u8>, claims: &IdTokenClaims) {
    let IdTokenClaims {
        iss,
        sub,
        aud,
        exp,
        iat,
        azp,
        sid,
        name,
        username,
        picture,
        created_at,
        updated_at,
        profile,
        email,
        email_verified,
        phone_number,
        phone_number_verified,
        address,
        roles,
        organizations,
        organization_roles,
        extra,
    } = claims;
    put_bytes(out, iss.as_bytes());
    put_bytes(out, sub.as_bytes());
    put_list(out, aud);
    out.extend_from_slice(&exp.to_le_bytes());
    out.extend_from_slice(&iat.to_le_bytes());
    for text in [azp, sid, name, username, picture] {
        put_opt_str(out, text);
    }
    put_opt_i64(out, *created_at);
    put_opt_i64(out, *updated_at);
    put_profile(out, profile);
    put_opt_str(out, email);
    put_opt_bool(out, *email_verified);
    put_opt_str(out, phone_number);
    put_opt_bool(out, *phone_number_verified);
    put_optional(out, address.as_ref(), put_address);
    for list in [roles, organizations, organization_roles] {
        put_optional(out, list.as_deref(), put_list);
    }
    let extra =
        (!extra.is_empty()).then(|| serde_json::to_vec(extra).expect("a JSON map serializes"));
    put_opt(out, extra.as_deref());
}

/// Reads claims written by [`put`]; `None` if the bytes are not such claims.
pub(super) fn read(r: &mut Reader<'_>) -> Option<IdTokenClaims> {
    Some(IdTokenClaims {
        iss: r.string()?,
        sub: r.string()?,
        aud: r.list()?,
        exp: r.i64()?,
        iat: r.i64()?,
        azp: r.opt_str()?,
        sid: r.opt_str()?,
        name: r.opt_str()?,
        username: r.opt_str()?,
        picture: r.opt_str()?,
        created_at: r.opt_i64()?,
        updated_at: r.opt_i64()?,
        profile: read_profile(r)?,
        email: r.opt_str()?,
        email_verified: r.opt_bool()?,
        phone_number: r.opt_str()?,
        phone_number_verified: r.opt_bool()?,
        address: r.optional(read_address)?,
        roles: r.opt_list()?,
        organizations: r.opt_list()?,
        organization_roles: r.opt_list()?,
        extra: match r.opt()? {
            Some(json) => serde_json::from_slice::<Map<String, Value>>(json).ok()?,
            None => Map::new(),
        },
    })
}

fn put_profile(out: &mut Vec<u8>, profile: &ProfileClaims) {
    let ProfileClaims {
        family_name,
        given_name,
        middle_name,
        nickname,
        preferred_username,
        profile,
        website,
        gender,
        birthdate,
        zoneinfo,
        locale,
    } = profile;
    for text in [
        family_name,
        given_name,
        middle_name,
        nickname,
        preferred_username,
        profile,
        website,
        gender,
        birthdate,
        zoneinfo,
        locale,
    ] {
        put_opt_str(out, text);
    }
}

fn read_profile(r: &mut Reader<'_>) -> Option<ProfileClaims> {
    Some(ProfileClaims {
        family_name: r.opt_str()?,
        given_name: r.opt_str()?,
        middle_name: r.opt_str()?,
        nickname: r.opt_str()?,
        preferred_username: r.opt_str()?,
        profile: r.opt_str()?,
        website: r.opt_str()?,
        gender: r.opt_str()?,
        birthdate: r.opt_str()?,
        zoneinfo: r.opt_str()?,
        locale: r.opt_str()?,
    })
}

fn put_address(out: &mut Vec<u8>, address: &Address) {
    let Address {
        formatted,
        street_address,
        locality,
        region,
        postal_code,
        country,
    } = address;
    for text in [
        formatted,
        street_address,
        locality,
        region,
        postal_code,
        country,
    ] {
        put_opt_str(out, text);
    }
}

fn read_address(r: &mut Reader<'_>) -> Option<Address> {
    Some(Address {
        formatted: r.opt_str()?,
        street_address: r.opt_str()?,
        locality: r.opt_str()?,
        region: r.opt_str()?,
        postal_code: r.opt_str()?,
        country: r.opt_str()?,
    })
}

fn put_opt_str(out: &mut Vec<u8>, text: &Option<String>) {
    put_opt(out, text.as_deref().map(str::as_bytes));
}

fn put_list(out: &mut Vec<u8>, list: &[String]) {
    put_len(out, list.len());
    for item in list {
        put_bytes(out, item.as_bytes());
    }
}

fn put_opt_i64(out: &mut Vec<u8>, n: Option<i64>) {
    put_optional(out, n, |out, n| out.extend_from_slice(&n.to_le_bytes()));
}

fn put_opt_bool(out: &mut Vec<u8>, b: Option<bool>) {
    out.push(match b {
        None => 0,
        Some(false) => 1,
        Some(true) => 2,
    });
}

impl Reader<'_> {
    fn string(&mut self) -> Option<String> {
        super::utf8(self.bytes()?)
    }

    fn list(&mut self) -> Option<Vec<String>> {
        let n = self.len()?;
        // Each item takes at least its length byte: a forged count fails before it allocates.
        if n > self.rest.len() {
            return None;
        }
        (0..n).map(|_| self.string()).collect()
    }

    fn opt_list(&mut self) -> Option<Option<Vec<String>>> {
        self.optional(Self::list)
    }

    fn opt_i64(&mut self) -> Option<Option<i64>> {
        self.optional(Self::i64)
    }

    fn opt_bool(&mut self) -> Option<Option<bool>> {
        match self.byte()? {
            0 => Some(None),
            1 => Some(Some(false)),
            2 => Some(Some(true)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::option::of;
    use proptest::prelude::*;

    use super::*;

    fn round_trip(claims: &IdTokenClaims) -> Option<IdTokenClaims> {
        let mut out = Vec::new();
        put(&mut out, claims);
        let all: Arc<[u8]> = out.into();
        let mut r = Reader::new(&all);
        let back = read(&mut r)?;
        r.rest.is_empty().then_some(back)
    }

    fn text() -> impl Strategy<Value = Option<String>> {
        of("\\PC{0,12}")
    }

    fn list() -> impl Strategy<Value = Option<Vec<String>>> {
        of(proptest::collection::vec("\\PC{0,8}", 0..4))
    }

    prop_compose! {
        fn profiles()(
            a in text(), b in text(), c in text(), d in text(), e in text(), f in text(),
            g in text(), h in text(), i in text(), j in text(), k in text(),
        ) -> ProfileClaims {
            ProfileClaims {
                family_name: a, given_name: b, middle_name: c, nickname: d,
                preferred_username: e, profile: f, website: g, gender: h, birthdate: i,
                zoneinfo: j, locale: k,
            }
        }
    }

    prop_compose! {
        fn addresses()(
            a in text(), b in text(), c in text(), d in text(), e in text(), f in text(),
        ) -> Address {
            Address {
                formatted: a, street_address: b, locality: c, region: d, postal_code: e,
                country: f,
            }
        }
    }

    prop_compose! {
        fn claims()(
            (iss, sub, aud) in ("\\PC{0,20}", "\\PC{0,20}", proptest::collection::vec("\\PC{0,8}", 0..3)),
            (exp, iat, created_at, updated_at) in (any::<i64>(), any::<i64>(), of(any::<i64>()), of(any::<i64>())),
            (azp, sid, name, username, picture) in (text(), text(), text(), text(), text()),
            profile in profiles(),
            (email, email_verified, phone_number, phone_number_verified) in (text(), of(any::<bool>()), text(), of(any::<bool>())),
            address in of(addresses()),
            (roles, organizations, organization_roles) in (list(), list(), list()),
            extra in proptest::collection::btree_map("\\PC{1,8}", of(any::<i64>()), 0..3),
        ) -> IdTokenClaims {
            IdTokenClaims {
                iss, sub, aud, exp, iat, azp, sid, name, username, picture, created_at,
                updated_at, profile, email, email_verified, phone_number,
                phone_number_verified, address, roles, organizations, organization_roles,
                extra: extra
                    .into_iter()
                    .map(|(k, v)| (k, v.map_or(Value::Null, Value::from)))
                    .collect(),
            }
        }
    }

    proptest! {
        #[test]
        fn claims_round_trip(claims in claims()) {
            prop_assert_eq!(round_trip(&claims), Some(claims));
        }

        #[test]
        fn cut_claims_are_refused_without_panicking(claims in claims(), cut in any::<prop::sample::Index>()) {
            let mut out = Vec::new();
            put(&mut out, &claims);
            let cut = cut.index(out.len());
            let all: Arc<[u8]> = out[..cut].into();
            prop_assert!(read(&mut Reader::new(&all)).is_none());
        }
    }

    #[test]
    fn nested_custom_claims_round_trip() {
        let claims: IdTokenClaims = serde_json::from_value(serde_json::json!({
            "iss": "https://t.logto.app/oidc", "sub": "u1", "aud": ["app", "other"],
            "exp": 2, "iat": 1, "picture": null, "address": { "country": "NL" },
            "nonce": "n-0", "custom": { "plan": ["pro", 3, 1.5, null, true] }
        }))
        .unwrap();
        assert_eq!(claims.extra.len(), 2);
        assert_eq!(round_trip(&claims), Some(claims));
    }
}
