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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
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
    /// Claims with the required fields set and every optional one empty, for tests and
    /// fixtures (the struct is `#[non_exhaustive]`; set other fields on the result, or
    /// use [`testing::TestUser`](crate::testing) with the `testing` feature).
    /// `iat` and `exp` are seconds since the Unix epoch.
    pub fn new(
        iss: impl Into<String>,
        sub: impl Into<String>,
        aud: impl Into<String>,
        iat: i64,
        exp: i64,
    ) -> IdTokenClaims {
        IdTokenClaims {
            iss: iss.into(),
            sub: sub.into(),
            aud: vec![aud.into()],
            exp,
            iat,
            azp: None,
            sid: None,
            name: None,
            username: None,
            picture: None,
            created_at: None,
            updated_at: None,
            profile: ProfileClaims::default(),
            email: None,
            email_verified: None,
            phone_number: None,
            phone_number_verified: None,
            address: None,
            roles: None,
            organizations: None,
            organization_roles: None,
            extra: Map::new(),
        }
    }

    /// When the user last really signed in at Logto (`auth_time`, seconds since the Unix
    /// epoch): entering a password or passing MFA, not a silent sign-in with Logto's
    /// session. Logto sends it when the sign-in asked for `max_age`, and
    /// [`RecentSignIn`](crate::RecentSignIn) reads it. `None` when absent or not a number.
    pub fn auth_time(&self) -> Option<i64> {
        self.extra.get("auth_time").and_then(Value::as_i64)
    }

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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
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
    /// When the user was created, in milliseconds since the epoch (`profile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    /// When the user was last updated, in milliseconds since the epoch (`profile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
    /// The standard `profile` claims sent only when not empty.
    #[serde(flatten)]
    pub profile: ProfileClaims,
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
    /// Postal address (`address`, OIDC Core 5.1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
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

impl UserInfo {
    /// A userinfo answer about `sub` with every other claim empty, for tests and fixtures
    /// (the struct is `#[non_exhaustive]`; set other fields on the result).
    pub fn new(sub: impl Into<String>) -> UserInfo {
        UserInfo {
            sub: sub.into(),
            name: None,
            username: None,
            picture: None,
            created_at: None,
            updated_at: None,
            profile: ProfileClaims::default(),
            email: None,
            email_verified: None,
            phone_number: None,
            phone_number_verified: None,
            address: None,
            custom_data: None,
            identities: None,
            sso_identities: None,
            roles: None,
            organizations: None,
            organization_data: None,
            organization_roles: None,
            extra: Map::new(),
        }
    }
}

/// One entry of `organization_data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OrganizationData {
    /// Organization id.
    pub id: String,
    /// Organization name.
    pub name: String,
    /// Organization description.
    #[serde(default)]
    pub description: Option<String>,
}

impl OrganizationData {
    /// An organization entry without a description, for tests and fixtures.
    pub fn new(id: impl Into<String>, name: impl Into<String>) -> OrganizationData {
        OrganizationData {
            id: id.into(),
            name: name.into(),
            description: None,
        }
    }
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
    pub const ALL: &'static [UserScope] = &[
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

/// The scopes of an access token (its space-separated `scope` claim), in order: an
/// iterator of `&str` that borrows the token. `{:?}` prints them as a list.
#[derive(Clone)]
pub struct Scopes<'a> {
    rest: &'a str,
}

impl<'a> Scopes<'a> {
    pub(crate) fn new(scope_claim: &'a str) -> Scopes<'a> {
        Scopes { rest: scope_claim }
    }
}

impl<'a> Iterator for Scopes<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let trimmed = self.rest.trim_start_matches(' ');
        if trimmed.is_empty() {
            self.rest = trimmed;
            return None;
        }
        let (scope, rest) = trimmed.split_once(' ').unwrap_or((trimmed, ""));
        self.rest = rest;
        Some(scope)
    }
}

impl std::iter::FusedIterator for Scopes<'_> {}

impl fmt::Debug for Scopes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.clone()).finish()
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
    fn scopes_skip_empty_pieces_and_print_as_a_list() {
        let scopes = Scopes::new(" a  b c ");
        assert_eq!(scopes.clone().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(format!("{scopes:?}"), r#"["a", "b", "c"]"#);
        assert_eq!(Scopes::new("").count(), 0);
    }

    #[test]
    fn every_scope_of_the_guide_has_its_wire_name() {
        let names: Vec<_> = UserScope::ALL.iter().map(|s| s.as_str()).collect();
        assert!(names.contains(&"urn:logto:scope:organizations"));
        assert!(names.contains(&"urn:logto:scope:organization_roles"));
        assert_eq!(names.len(), 11);
    }
}
