//! Mappings tagged by a `type` key, deserialized without losing error positions.
//!
//! Serde's `#[serde(tag = "type")]` buffers the whole mapping before it knows the variant, and the
//! buffer forgets where each key was written: an unknown key would be reported at the start of
//! the component instead of on its own line. Here the `type` key must come first; its value picks
//! the variant and the rest of the mapping streams straight into the variant's struct, so every
//! error keeps its exact line and column.

use serde::de::{self, MapAccess, value::MapAccessDeserializer};

/// Reads the leading `type` key of `map` and hands the remaining entries to `build`.
pub fn visit_tagged<'de, A, T>(
    mut map: A,
    what: &str,
    build: impl FnOnce(&str, MapAccessDeserializer<A>) -> Result<T, A::Error>,
) -> Result<T, A::Error>
where
    A: MapAccess<'de>,
{
    match map.next_key::<String>()? {
        Some(key) if key == "type" => {
            let kind: String = map.next_value()?;
            build(&kind, MapAccessDeserializer::new(map))
        }
        Some(key) => Err(de::Error::custom(format!("a {what} starts with its `type` (found `{key}` first)"))),
        None => Err(de::Error::custom(format!("a {what} needs a `type`"))),
    }
}

/// Implements `Deserialize` for an enum whose variants each wrap one config struct, selected by
/// the mapping's leading `type: <name>` key.
#[macro_export]
macro_rules! type_tagged {
    ($enum:ident, $what:literal, { $($name:literal => $variant:ident($ty:ty)),+ $(,)? }) => {
        impl<'de> serde::Deserialize<'de> for $enum {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Visitor;
                impl<'de> serde::de::Visitor<'de> for Visitor {
                    type Value = $enum;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(f, "a {} mapping starting with `type`", $what)
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<$enum, A::Error> {
                        $crate::config::tagged::visit_tagged(map, $what, |kind, rest| match kind {
                            $($name => <$ty as serde::Deserialize>::deserialize(rest).map($enum::$variant),)+
                            other => Err(serde::de::Error::unknown_variant(other, &[$($name),+])),
                        })
                    }
                }
                d.deserialize_map(Visitor)
            }
        }

        impl $enum {
            /// The `type` name this component was configured with.
            pub fn type_name(&self) -> &'static str {
                match self {
                    $($enum::$variant(_) => $name,)+
                }
            }
        }
    };
}
