//! Typed claims and scopes: what Logto says about the signed-in user.
//!
//! The structs here follow the "Scopes and claims" tables of Logto's guide. Every struct
//! keeps the claims it does not know in [`IdTokenClaims::extra`] / [`UserInfo::extra`], so a
//! custom claim is never lost.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The claims of a verified ID token (the guide's `req.user.claims`).
///
/// Standard OIDC claims keep their names. Logto's `created_at` and `updated_at` are
/// **milliseconds** since the Unix epoch, not seconds. `name`, `username` and `picture` are
/// `None` both when Logto sends `null` (empty) and when the `profile` scope was not granted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdTokenClaims {
    /// Issuer: `<endpoint>/oidc`.
    pub iss: String,
    /// Subject: the user's id.
    pub sub: String,
    /// Audience: the app id (one string or a list on the wire).
    #[serde(with = "audience")]
    pub aud: Vec<String>,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Authorized party, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azp: Option<String>,
    /// Session id at Logto, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Full name (`profile`).
    #[serde(default)]
    pub name: Option<String>,
    /// Username (`profile`).
    #[serde(default)]
    pub username: Option<String>,
    /// Profile picture URL (`profile`).
    #[serde(default)]
    pub picture: Option<String>,
    /// When the user was created, in milliseconds since the epoch (`profile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    /// When the user was last updated, in milliseconds since the epoch (`profile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
    /// The standard `profile` claims sent only when not empty.
    #[serde(flatten)]
    pub profile: ProfileClaims,
    /// Email address (`email`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Whether the email address is verified (`email`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    /// Phone number (`phone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    /// Whether the phone number is verified (`phone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number_verified: Option<bool>,
    /// Postal address (`address`, OIDC Core 5.1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
    /// Role names (`roles`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// Organization ids (`urn:logto:scope:organizations`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organizations: Option<Vec<String>>,
    /// Organization roles as `<organization_id>:<role>` (`urn:logto:scope:organization_roles`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_roles: Option<Vec<String>>,
    /// Every claim not named above (custom claims included).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl IdTokenClaims {
    /// The organization roles of `organization_id`, parsed from `organization_roles`.
    pub fn roles_in_organization<'a>(
        &'a self,
        organization_id: &'a str,
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.organization_roles
            .iter()
            .flatten()
            .filter_map(move |entry| entry.split_once(':'))
            .filter(move |(org, _)| *org == organization_id)
            .map(|(_, role)| role)
    }
}

/// The standard `profile` claims that Logto sends only when they are not empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfileClaims {
    /// Family name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    /// Given name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    /// Middle name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub middle_name: Option<String>,
    /// Nickname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nickname: Option<String>,
    /// Preferred username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    /// Profile page URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Web site URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub website: Option<String>,
    /// Gender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gender: Option<String>,
    /// Birthdate (`YYYY-MM-DD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birthdate: Option<String>,
    /// Time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zoneinfo: Option<String>,
    /// Locale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
}

/// A postal address (OIDC Core 5.1.1).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Address {
    /// The full address, formatted for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formatted: Option<String>,
    /// Street address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub street_address: Option<String>,
    /// City or locality.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    /// State, province or region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Postal code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// Country.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// The answer of Logto's userinfo endpoint: every claim of the granted scopes, including
/// those never put in the ID token (`custom_data`, `identities`, `sso_identities`,
/// `organization_data`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserInfo {
    /// Subject: equals the ID token's `sub` (checked before a `UserInfo` is handed out).
    pub sub: String,
    /// Full name.
    #[serde(default)]
    pub name: Option<String>,
    /// Username.
    #[serde(default)]
    pub username: Option<String>,
    /// Profile picture URL.
    #[serde(default)]
    pub picture: Option<String>,
    /// Email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Whether the email address is verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    /// Phone number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    /// Whether the phone number is verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number_verified: Option<bool>,
    /// The user's custom data (`custom_data` scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_data: Option<Value>,
    /// Linked social identities (`identities` scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identities: Option<Value>,
    /// Linked enterprise SSO identities (`identities` scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sso_identities: Option<Vec<Value>>,
    /// Role names (`roles`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// Organization ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organizations: Option<Vec<String>>,
    /// Organizations with their names (`urn:logto:scope:organizations`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_data: Option<Vec<OrganizationData>>,
    /// Organization roles as `<organization_id>:<role>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_roles: Option<Vec<String>>,
    /// Every other claim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One entry of `organization_data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrganizationData {
    /// Organization id.
    pub id: String,
    /// Organization name.
    pub name: String,
    /// Organization description.
    #[serde(default)]
    pub description: Option<String>,
}

/// The scopes of Logto's guide. Use [`UserScope::as_str`] for the wire value; the
/// `scopes` config key takes the same strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UserScope {
    /// `openid` (always requested).
    OpenId,
    /// `offline_access` (always requested): a refresh token.
    OfflineAccess,
    /// `profile` (always requested).
    Profile,
    /// `email`.
    Email,
    /// `phone`.
    Phone,
    /// `address`.
    Address,
    /// `custom_data` (userinfo only).
    CustomData,
    /// `identities` (userinfo only).
    Identities,
    /// `roles`.
    Roles,
    /// `urn:logto:scope:organizations`.
    Organizations,
    /// `urn:logto:scope:organization_roles`.
    OrganizationRoles,
}

impl UserScope {
    /// Every scope, in the guide's order.
    pub const ALL: [UserScope; 11] = [
        UserScope::OpenId,
        UserScope::OfflineAccess,
        UserScope::Profile,
        UserScope::Email,
        UserScope::Phone,
        UserScope::Address,
        UserScope::CustomData,
        UserScope::Identities,
        UserScope::Roles,
        UserScope::Organizations,
        UserScope::OrganizationRoles,
    ];

    /// The scope's value on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            UserScope::OpenId => "openid",
            UserScope::OfflineAccess => "offline_access",
            UserScope::Profile => "profile",
            UserScope::Email => "email",
            UserScope::Phone => "phone",
            UserScope::Address => "address",
            UserScope::CustomData => "custom_data",
            UserScope::Identities => "identities",
            UserScope::Roles => "roles",
            UserScope::Organizations => "urn:logto:scope:organizations",
            UserScope::OrganizationRoles => "urn:logto:scope:organization_roles",
        }
    }
}

impl fmt::Display for UserScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The resource Logto issues organization tokens for; requested at sign-in whenever the
/// organizations scope is.
pub const ORGANIZATIONS_RESOURCE: &str = "urn:logto:resource:organizations";

/// The audience of an organization token: `urn:logto:organization:<id>`.
pub fn organization_urn(organization_id: &str) -> String {
    format!("urn:logto:organization:{organization_id}")
}

/// `aud` is a string or an array of strings on the wire.
mod audience {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        })
    }

    pub fn serialize<S: Serializer>(aud: &[String], s: S) -> Result<S::Ok, S::Error> {
        match aud {
            [one] => s.serialize_str(one),
            many => s.collect_seq(many),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logto_claims_parse_with_nulls_and_milliseconds() {
        let json = serde_json::json!({
            "iss": "http://localhost:3001/oidc", "sub": "u1", "aud": "app", "exp": 2, "iat": 1,
            "name": null, "username": "alice", "picture": null,
            "created_at": 1_700_000_000_123_i64, "updated_at": 1_700_000_000_456_i64,
            "roles": ["admin"], "organizations": ["o1"], "organization_roles": ["o1:admin"],
            "given_name": "Alice", "custom_claim": 7
        });
        let claims: IdTokenClaims = serde_json::from_value(json).unwrap();
        assert_eq!(claims.name, None);
        assert_eq!(claims.created_at, Some(1_700_000_000_123));
        assert_eq!(claims.profile.given_name.as_deref(), Some("Alice"));
        assert_eq!(claims.extra["custom_claim"], 7);
        assert_eq!(claims.aud, vec!["app".to_string()]);
        assert_eq!(
            claims.roles_in_organization("o1").collect::<Vec<_>>(),
            ["admin"]
        );
    }

    #[test]
    fn every_scope_of_the_guide_has_its_wire_name() {
        let names: Vec<_> = UserScope::ALL.iter().map(|s| s.as_str()).collect();
        assert!(names.contains(&"urn:logto:scope:organizations"));
        assert!(names.contains(&"urn:logto:scope:organization_roles"));
        assert_eq!(names.len(), 11);
    }
}
