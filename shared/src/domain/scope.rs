//! Which keys belong where: the deployment's key filter ([`KeyScope`], `KEY_PREFIX`/`KEY_SUFFIX`)
//! and the map from keys to their owners ([`OwnerTemplate`], `OWNER_KEY_TEMPLATE`).
//!
//! Ingest indexes only keys in the scope and stores each record's owner; search applies the
//! caller's owner to every query and presigns only keys in the scope that belong to the caller.

/// Owners longer than this are refused: a claim is an id (a UUID for Cognito), not a document.
pub const MAX_OWNER_BYTES: usize = 256;

/// Which objects a deployment serves and who owns them; ingest and search read the same
/// variables, so what one indexes is what the other may presign.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// `OWNER_KEY_TEMPLATE`: ingest stores each key's owner; search, when set, returns only the
    /// caller's images (the owner comes from verified claims, or `--as-user` locally).
    pub owners: Option<OwnerTemplate>,
    /// `KEY_PREFIX` / `KEY_SUFFIX`.
    pub keys: KeyScope,
    /// `UPLOADS_BUCKET`: the bucket served (any when unset, as on the local stack's tools).
    pub bucket: Option<String>,
}

impl Access {
    /// Whether the object is one this deployment indexes and presigns.
    pub fn serves(&self, bucket: &str, key: &str) -> bool {
        self.bucket.as_deref().is_none_or(|b| b == bucket) && self.keys.contains(key)
    }

    /// The owner stored with `key`'s record ("" without a template or outside every owner's space).
    pub fn owner_of(&self, key: &str) -> String {
        self.owners.as_ref().and_then(|t| t.owner_of(key)).unwrap_or_default().to_string()
    }
}

/// The keys a deployment serves: those that start with `prefix` and end with `suffix`
/// (the S3 notification filter of the template, and what backfill and presigning honour).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyScope {
    pub prefix: String,
    pub suffix: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("the prefix {asked:?} is outside KEY_PREFIX={configured:?}: this deployment serves only keys under it")]
    OutsidePrefix { asked: String, configured: String },
}

impl KeyScope {
    pub fn contains(&self, key: &str) -> bool {
        key.starts_with(&self.prefix)
            && key.ends_with(&self.suffix)
            && key.len() >= self.prefix.len() + self.suffix.len()
    }

    /// The listing prefix for `asked` (a prefix a user gave) inside this scope: the longer of the
    /// two when one extends the other; anything else would list keys the scope leaves out.
    pub fn narrow(&self, asked: &str) -> Result<String, ScopeError> {
        if asked.starts_with(&self.prefix) {
            Ok(asked.to_string())
        } else if self.prefix.starts_with(asked) {
            Ok(self.prefix.clone())
        } else {
            Err(ScopeError::OutsidePrefix { asked: asked.into(), configured: self.prefix.clone() })
        }
    }
}

/// How keys map to owners: a key prefix with one `{claim}` placeholder, e.g. `users/{sub}/`. The
/// owner of `users/alice/cat.jpg` is `alice`, and a caller whose verified `sub` claim is `alice`
/// sees only keys under `users/alice/`. The text after the placeholder ends the owner, so an owner
/// never contains it (with `users/{sub}/`, no owner contains `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerTemplate {
    text: String,
    before: String,
    claim: String,
    after: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnerError {
    #[error(
        "OWNER_KEY_TEMPLATE={0:?} is not a key template: give a key prefix with one {{claim}} placeholder \
         followed by a delimiter, e.g. users/{{sub}}/"
    )]
    BadTemplate(String),
    #[error("the verified identity has no {0:?} claim, which OWNER_KEY_TEMPLATE names")]
    MissingClaim(String),
    #[error("the owner {owner:?} cannot own keys: it must be 1 to {MAX_OWNER_BYTES} bytes without {delimiter:?} or control characters")]
    BadOwner { owner: String, delimiter: String },
}

impl OwnerTemplate {
    pub fn parse(text: &str) -> Result<Self, OwnerError> {
        let bad = || OwnerError::BadTemplate(text.to_string());
        let (before, rest) = text.split_once('{').ok_or_else(bad)?;
        let (claim, after) = rest.split_once('}').ok_or_else(bad)?;
        let claim_ok = !claim.is_empty() && claim.chars().all(|c| c.is_ascii_alphanumeric() || "_:.-".contains(c));
        if !claim_ok || after.is_empty() || after.contains(['{', '}']) || before.contains('}') {
            return Err(bad());
        }
        Ok(OwnerTemplate { text: text.into(), before: before.into(), claim: claim.into(), after: after.into() })
    }

    /// The template as configured (recorded in the collection, so ingest and search agree).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The claim of a verified identity that names the owner (`sub` in `users/{sub}/`).
    pub fn claim(&self) -> &str {
        &self.claim
    }

    /// The owner of `key`, or `None` for a key outside every owner's space.
    pub fn owner_of<'k>(&self, key: &'k str) -> Option<&'k str> {
        let rest = key.strip_prefix(self.before.as_str())?;
        let end = rest.find(self.after.as_str())?;
        let owner = &rest[..end];
        self.check(owner).ok().map(|_| owner)
    }

    /// Where `owner`'s keys start (`users/alice/`), after checking that `owner` can own keys.
    pub fn key_prefix(&self, owner: &str) -> Result<String, OwnerError> {
        self.check(owner)?;
        Ok(format!("{}{owner}{}", self.before, self.after))
    }

    fn check(&self, owner: &str) -> Result<(), OwnerError> {
        let valid = !owner.is_empty()
            && owner.len() <= MAX_OWNER_BYTES
            && !owner.contains(self.after.as_str())
            && !owner.chars().any(char::is_control);
        match valid {
            true => Ok(()),
            false => Err(OwnerError::BadOwner { owner: owner.into(), delimiter: self.after.clone() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn templates_need_one_claim_and_a_delimiter() {
        let t = OwnerTemplate::parse("users/{sub}/").unwrap();
        assert_eq!((t.claim(), t.as_str()), ("sub", "users/{sub}/"));
        assert_eq!(OwnerTemplate::parse("{custom:tenant}-").unwrap().claim(), "custom:tenant");
        for bad in ["", "users/", "users/{sub}", "users/{}/", "{a}/{b}/", "users/{s b}/", "u}/{sub}/", "users/{sub/"] {
            assert!(OwnerTemplate::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn owners_come_from_keys_and_give_their_prefix() {
        let t = OwnerTemplate::parse("users/{sub}/").unwrap();
        assert_eq!(t.owner_of("users/alice/cats/1.jpg"), Some("alice"));
        assert_eq!(t.owner_of("users/alice"), None, "no delimiter: not inside a user's folder");
        assert_eq!(t.owner_of("users//x.jpg"), None);
        assert_eq!(t.owner_of("shared/alice/x.jpg"), None);
        assert_eq!(t.key_prefix("alice").unwrap(), "users/alice/");
        for bad in ["", "a/b", "a\nb", &"x".repeat(MAX_OWNER_BYTES + 1)] {
            assert!(t.key_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scopes_filter_keys_and_narrow_prefixes() {
        let scope = KeyScope { prefix: "photos/".into(), suffix: ".jpg".into() };
        assert!(scope.contains("photos/a.jpg"));
        assert!(!scope.contains("photos/a.png") && !scope.contains("other/a.jpg"));
        assert!(!KeyScope { prefix: "a.jpg".into(), suffix: ".jpg".into() }.contains("a.jpg"), "no overlap");
        assert_eq!(scope.narrow("").unwrap(), "photos/");
        assert_eq!(scope.narrow("pho").unwrap(), "photos/");
        assert_eq!(scope.narrow("photos/2024/").unwrap(), "photos/2024/");
        assert!(scope.narrow("videos/").is_err());
        assert_eq!(KeyScope::default().narrow("x/").unwrap(), "x/");
    }

    proptest! {
        /// Every key an owner's prefix starts belongs to that owner, and to no other.
        #[test]
        fn a_key_under_an_owners_prefix_is_that_owners(owner in "[^/\\p{Cc}]{1,20}", rest in ".{0,20}") {
            let t = OwnerTemplate::parse("users/{sub}/").unwrap();
            let key = format!("{}{rest}", t.key_prefix(&owner).unwrap());
            prop_assert_eq!(t.owner_of(&key), Some(owner.as_str()));
        }
    }
}
