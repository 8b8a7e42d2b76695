//! Small helper macros shared by the resource modules.

/// Declares a closed set of string values (Calico's "enum" strings such as rule actions).
///
/// The generated type serialises as its exact string, and deserialising an unknown value fails
/// with a message that lists every valid value, so a loader can name both the path and the fix.
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in Calico's documented order.
            pub const ALL: &'static [$name] = &[ $( $name::$variant, )+ ];

            /// The exact string Calico uses for this value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }

            /// The valid strings joined for error messages, e.g. `Allow, Deny, Log, Pass`.
            pub fn valid_values() -> String {
                let all: &[&str] = &[ $( $text, )+ ];
                all.join(", ")
            }

            /// Parses the exact (case-sensitive) Calico string.
            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $( $text => Some($name::$variant), )+
                    _ => None,
                }
            }

            /// The error message for an invalid string.
            pub fn invalid_message(s: &str) -> String {
                let mut msg = format!(
                    "{s:?} is not a valid {} (valid: {})",
                    $what,
                    Self::valid_values()
                );
                if let Some(v) = Self::ALL.iter().find(|v| v.as_str().eq_ignore_ascii_case(s)) {
                    msg.push_str(&format!("; values are case-sensitive, did you mean {}?", v.as_str()));
                }
                msg
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $name::parse(s).ok_or_else(|| $name::invalid_message(s))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(f, "one of: {}", $name::valid_values())
                    }
                    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<$name, E> {
                        $name::parse(s).ok_or_else(|| E::custom($name::invalid_message(s)))
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

pub(crate) use string_enum;
