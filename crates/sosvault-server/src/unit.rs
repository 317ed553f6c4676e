//! A team's id: [`UnitId`], `u-` and 12 lower-case hex digits.
//!
//! The service assigns it when an operator registers a team
//! ([`UnitId::generate`]: six random bytes); it names the team in the
//! store (a `TEXT` column holding the wire form), on the dispatch board, in
//! events, in the API's paths and JSON. It is held as its six bytes, so
//! every value is a valid id: text from outside (a path, a stored row)
//! becomes one only through [`UnitId::parse`], and anything else is refused
//! there, never carried along.

use core::fmt;
use core::str::FromStr;

/// The id of a team (a unit): `u-` followed by 12 lower-case hex digits.
///
/// Its order is the order of its wire form (lower-case hex keeps the bytes'
/// order), so a list sorted by id reads the same in memory and in SQL.
///
/// ```
/// use sosvault_server::unit::UnitId;
///
/// let id: UnitId = "u-00a1b2c3d4e5".parse().unwrap();
/// assert_eq!(id.to_string(), "u-00a1b2c3d4e5");
/// assert_eq!(id, UnitId::from_bytes([0x00, 0xa1, 0xb2, 0xc3, 0xd4, 0xe5]));
/// assert_eq!(serde_json::to_string(&id).unwrap(), r#""u-00a1b2c3d4e5""#);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnitId([u8; UnitId::LEN]);

/// Text that is not a unit id (`u-` and 12 lower-case hex digits).
///
/// ```
/// use sosvault_server::unit::{BadUnitId, UnitId};
///
/// for bad in ["", "u", "u-", "u-00A1B2C3D4E5", "u-00a1b2c3d4e", "x-00a1b2c3d4e5", "u-00a1b2c3d4e5f"] {
///     assert_eq!(UnitId::parse(bad), Err(BadUnitId));
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a unit id is `u-` and 12 lower-case hex digits")]
pub struct BadUnitId;

impl UnitId {
    /// Its length in bytes.
    pub const LEN: usize = 6;

    /// The prefix of its wire form.
    pub const PREFIX: &'static str = "u-";

    /// Its wire form as the ECMA-262 pattern the API documents.
    pub const PATTERN: &'static str = "^u-[0-9a-f]{12}$";

    /// The length of its wire form, in characters.
    pub const TEXT_LEN: usize = Self::PREFIX.len() + 2 * Self::LEN;

    /// A fresh random id, for a team being registered.
    ///
    /// ```
    /// use sosvault_server::unit::UnitId;
    ///
    /// let (a, b) = (UnitId::generate(), UnitId::generate());
    /// assert_ne!(a, b);
    /// assert_eq!(a.to_string().parse(), Ok(a));
    /// ```
    pub fn generate() -> Self {
        let mut bytes = [0u8; Self::LEN];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut bytes);
        Self(bytes)
    }

    /// Wraps raw bytes.
    pub const fn from_bytes(bytes: [u8; Self::LEN]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    ///
    /// ```
    /// use sosvault_server::unit::UnitId;
    ///
    /// let id = UnitId::from_bytes([1, 2, 3, 4, 5, 6]);
    /// assert_eq!(id.as_bytes(), &[1, 2, 3, 4, 5, 6]);
    /// assert_eq!(id.to_string(), "u-010203040506");
    /// ```
    pub const fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }

    /// Parses the wire form, `u-` and exactly 12 lower-case hex digits
    /// (the only form the service writes, so an id has one spelling).
    ///
    /// ```
    /// use sosvault_server::unit::{BadUnitId, UnitId};
    ///
    /// assert!(UnitId::parse("u-0123456789ab").is_ok());
    /// assert_eq!(UnitId::parse("u-0123456789AB"), Err(BadUnitId));
    /// ```
    pub fn parse(s: &str) -> Result<Self, BadUnitId> {
        let digits = s.strip_prefix(Self::PREFIX).ok_or(BadUnitId)?;
        let lower_hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
        if digits.len() != 2 * Self::LEN || !digits.bytes().all(|b| lower_hex(&b)) {
            return Err(BadUnitId);
        }
        let mut bytes = [0u8; Self::LEN];
        hex::decode_to_slice(digits, &mut bytes).map_err(|_| BadUnitId)?;
        Ok(Self(bytes))
    }
}

impl FromStr for UnitId {
    type Err = BadUnitId;

    fn from_str(s: &str) -> Result<Self, BadUnitId> {
        Self::parse(s)
    }
}

impl fmt::Display for UnitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::PREFIX)?;
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for UnitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UnitId({self})")
    }
}

/// Serialized as its wire form: the JSON is the string it always was.
impl serde::Serialize for UnitId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Documented as the string it is, with its pattern.
impl utoipa::PartialSchema for UnitId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(Self::TEXT_LEN))
            .max_length(Some(Self::TEXT_LEN))
            .pattern(Some(Self::PATTERN))
            .description(Some("A unit's id: `u-` and 12 lower-case hex digits."))
            .into()
    }
}

impl utoipa::ToSchema for UnitId {}

/// A unit id made from a test's name for a team (the same name, the same
/// id), so tests can keep naming teams in words.
#[cfg(test)]
pub(crate) fn named(name: &str) -> UnitId {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(name.as_bytes());
    let mut bytes = [0u8; UnitId::LEN];
    bytes.copy_from_slice(&digest[..UnitId::LEN]);
    UnitId(bytes)
}

#[cfg(test)]
mod tests {
    use super::{BadUnitId, UnitId, named};

    #[test]
    fn the_wire_form_round_trips_and_nothing_else_parses() {
        for _ in 0..64 {
            let id = UnitId::generate();
            let text = id.to_string();
            assert_eq!(text.len(), UnitId::TEXT_LEN);
            assert!(text.starts_with("u-"));
            assert_eq!(text.parse(), Ok(id));
        }
        for bad in [
            "u-+123456789ab",
            "u- 123456789ab",
            "u-0123456789a\u{e9}",
            "U-0123456789ab",
            " u-0123456789ab",
            "u-0123456789ab ",
            "unit-1",
            "u",
            "v",
        ] {
            assert_eq!(UnitId::parse(bad), Err(BadUnitId), "{bad:?}");
        }
    }

    #[test]
    fn ids_sort_as_their_wire_form_does() {
        let mut ids: Vec<UnitId> = (0..64).map(|_| UnitId::generate()).collect();
        ids.sort();
        let texts: Vec<String> = ids.iter().map(UnitId::to_string).collect();
        let mut sorted = texts.clone();
        sorted.sort();
        assert_eq!(texts, sorted);
    }

    #[test]
    fn a_name_gives_one_id() {
        assert_eq!(named("near"), named("near"));
        assert_ne!(named("near"), named("far"));
    }
}
