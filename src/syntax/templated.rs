//! Options written as a literal or as a template rendered when the step runs:
//! `retries: 30` or `retries: "{{ user_checks }}"`, `delete: true` or
//! `delete: "{{ mirror }}"`. Every number, duration, count, rate and boolean option of a step
//! and of its action is a [`Templated`] of a [`Setting`]. A literal is checked when the
//! playbook loads; a template's variables are checked then too (like every template of a
//! step), and what it renders to is checked when the step runs (see
//! `StepContext::setting`), where a value that is not one is invalid input naming the step and
//! the key.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::HumanDuration;
use super::duration::DURATION_HELP;
use crate::diagnostic::ValueError;

/// An option known when the playbook loads, or a template rendered when the step runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Templated<T> {
    /// Written out, and checked when the playbook loads.
    Literal(T),
    /// `"{{ user_checks }}"`.
    Template(String),
}

impl<T: Default> Default for Templated<T> {
    fn default() -> Self {
        Templated::Literal(T::default())
    }
}

impl<T> Templated<T> {
    /// The template, when the option is one.
    pub fn template(&self) -> Option<&str> {
        match self {
            Templated::Literal(_) => None,
            Templated::Template(template) => Some(template),
        }
    }
}

impl<T: Setting> Templated<T> {
    /// For a plan: what a templated option rendered to, `` `delete: {{ mirror }}` is true``;
    /// `None` for a literal, which the plan shows as written.
    pub fn rendered_note(&self, key: &str, value: &T) -> Option<String> {
        self.template()
            .map(|template| format!("`{key}: {template}` is {value}"))
    }
}

impl Templated<bool> {
    /// A literal `false`, the default of a boolean option: left out when the step is written
    /// back (for its definition hash), as the plain `bool` it replaced was.
    pub fn is_false(&self) -> bool {
        matches!(self, Templated::Literal(false))
    }
}

/// A value a [`Templated`] option can hold: how it is read from YAML and from the text a
/// template renders to, and how a plan shows it.
pub trait Setting: Sized + Clone + fmt::Display {
    /// What a rendered value must be, after "which is not".
    const EXPECTED: &'static str;
    /// A whole number written in YAML.
    fn from_number(number: u64) -> Result<Self, ValueError>;
    /// A negative number written in YAML.
    fn from_negative(number: i64) -> Result<Self, ValueError>;
    /// A number with a fraction written in YAML.
    fn from_float(number: f64) -> Result<Self, ValueError> {
        Err(Self::not_a_value(&number.to_string()))
    }
    /// `true` or `false` written in YAML.
    fn from_bool(value: bool) -> Result<Self, ValueError> {
        Err(Self::not_a_value(&value.to_string()))
    }
    /// Text written in YAML, or rendered from a template; `None` when it is not a value.
    fn from_text(text: &str) -> Option<Self>;
    /// The complaint about text that [`Setting::from_text`] refused.
    fn not_a_value(text: &str) -> ValueError;
}

impl Setting for u32 {
    const EXPECTED: &'static str = "a whole number of 0 or more";

    fn from_number(number: u64) -> Result<Self, ValueError> {
        u32::try_from(number)
            .map_err(|_| ValueError::new("`{key}` is too big", "for example `{key}: 3`"))
    }

    fn from_negative(_: i64) -> Result<Self, ValueError> {
        Err(ValueError::new(
            "`{key}` cannot be negative",
            "use 0 or more",
        ))
    }

    fn from_text(text: &str) -> Option<Self> {
        text.trim().parse().ok()
    }

    fn not_a_value(text: &str) -> ValueError {
        ValueError::new(
            format!("`{{key}}` must be a whole number, not `{text}`"),
            "for example `{key}: 3`",
        )
    }
}

/// A whole number of at least 1: workers, pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Count(pub u32);

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

const COUNT_HELP: &str = "for example `{key}: 4`";

impl Setting for Count {
    const EXPECTED: &'static str = "a whole number of at least 1";

    fn from_number(number: u64) -> Result<Self, ValueError> {
        match u32::try_from(number) {
            Ok(0) => Err(ValueError::new("`{key}` must be at least 1", COUNT_HELP)),
            Ok(number) => Ok(Count(number)),
            Err(_) => Err(ValueError::new("`{key}` is too big", COUNT_HELP)),
        }
    }

    fn from_negative(_: i64) -> Result<Self, ValueError> {
        Err(ValueError::new("`{key}` must be at least 1", COUNT_HELP))
    }

    fn from_text(text: &str) -> Option<Self> {
        text.trim()
            .parse::<u32>()
            .ok()
            .filter(|&number| number >= 1)
            .map(Count)
    }

    fn not_a_value(text: &str) -> ValueError {
        match text.trim().parse::<i64>() {
            Ok(number) if number < 1 => ValueError::new("`{key}` must be at least 1", COUNT_HELP),
            Ok(_) => ValueError::new("`{key}` is too big", COUNT_HELP),
            Err(_) => ValueError::new(
                format!("`{{key}}` must be a whole number of at least 1, not `{text}`"),
                COUNT_HELP,
            ),
        }
    }
}

/// An exit code of a list of them (`ok_codes: [0, 1]`), 0 to 255; its complaints are about
/// "an item of" the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ExitCode(pub u8);

impl fmt::Display for ExitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

const EXIT_CODE_RANGE: &str = "an exit code is a number from 0 to 255";

impl Setting for ExitCode {
    const EXPECTED: &'static str = "an exit code from 0 to 255";

    fn from_number(number: u64) -> Result<Self, ValueError> {
        u8::try_from(number).map(ExitCode).map_err(|_| {
            ValueError::new(
                format!("an item of `{{key}}` is too large: `{number}`"),
                EXIT_CODE_RANGE,
            )
        })
    }

    fn from_negative(_: i64) -> Result<Self, ValueError> {
        Err(ValueError::new(
            "an item of `{key}` cannot be negative",
            EXIT_CODE_RANGE,
        ))
    }

    fn from_text(text: &str) -> Option<Self> {
        text.trim().parse().ok().map(ExitCode)
    }

    fn not_a_value(text: &str) -> ValueError {
        if let Ok(number) = text.trim().parse::<i64>() {
            let refused = match u64::try_from(number) {
                Ok(number) => Self::from_number(number),
                Err(_) => Self::from_negative(number),
            };
            if let Err(error) = refused {
                return error;
            }
        }
        ValueError::new(
            format!("an item of `{{key}}` must be a whole number, not `{text}`"),
            "write a whole number such as `3`",
        )
    }
}

impl Setting for bool {
    const EXPECTED: &'static str = "true or false";

    fn from_number(number: u64) -> Result<Self, ValueError> {
        Err(Self::not_a_value(&number.to_string()))
    }

    fn from_negative(number: i64) -> Result<Self, ValueError> {
        Err(Self::not_a_value(&number.to_string()))
    }

    fn from_bool(value: bool) -> Result<Self, ValueError> {
        Ok(value)
    }

    /// `true` or `false` as YAML writes them (`True`, `TRUE` too); a template renders a
    /// boolean as `True` or `False`.
    fn from_text(text: &str) -> Option<Self> {
        match text.trim() {
            "true" | "True" | "TRUE" => Some(true),
            "false" | "False" | "FALSE" => Some(false),
            _ => None,
        }
    }

    fn not_a_value(text: &str) -> ValueError {
        ValueError::new(
            format!("`{{key}}` must be true or false, not `{text}`"),
            "for example `{key}: true`, or a template that renders to true or false",
        )
    }
}

impl Setting for HumanDuration {
    const EXPECTED: &'static str = "a duration such as 30, 90s, 5m or 1h30m";

    fn from_number(seconds: u64) -> Result<Self, ValueError> {
        Ok(HumanDuration(Duration::from_secs(seconds)))
    }

    fn from_negative(_: i64) -> Result<Self, ValueError> {
        Err(ValueError::new("`{key}` cannot be negative", DURATION_HELP))
    }

    fn from_text(text: &str) -> Option<Self> {
        HumanDuration::parse(text).ok()
    }

    fn not_a_value(text: &str) -> ValueError {
        let message = HumanDuration::parse(text)
            .err()
            .unwrap_or_else(|| format!("`{text}` is not a duration"));
        ValueError::new(message, DURATION_HELP)
    }
}

impl<T: Serialize> Serialize for Templated<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Templated::Literal(value) => value.serialize(serializer),
            Templated::Template(text) => serializer.serialize_str(text),
        }
    }
}

impl<'de, T: Setting> Deserialize<'de> for Templated<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SettingVisitor<T>(PhantomData<T>);
        impl<T: Setting> Visitor<'_> for SettingVisitor<T> {
            type Value = Templated<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{} or a template", T::EXPECTED)
            }
            fn visit_u64<E: de::Error>(self, number: u64) -> Result<Self::Value, E> {
                T::from_number(number)
                    .map(Templated::Literal)
                    .map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, number: i64) -> Result<Self::Value, E> {
                match u64::try_from(number) {
                    Ok(number) => self.visit_u64(number),
                    Err(_) => T::from_negative(number)
                        .map(Templated::Literal)
                        .map_err(E::custom),
                }
            }
            fn visit_f64<E: de::Error>(self, number: f64) -> Result<Self::Value, E> {
                T::from_float(number)
                    .map(Templated::Literal)
                    .map_err(E::custom)
            }
            fn visit_bool<E: de::Error>(self, value: bool) -> Result<Self::Value, E> {
                T::from_bool(value)
                    .map(Templated::Literal)
                    .map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                if super::is_template(text) {
                    return Ok(Templated::Template(text.to_string()));
                }
                T::from_text(text)
                    .map(Templated::Literal)
                    .ok_or_else(|| E::custom(T::not_a_value(text)))
            }
        }
        deserializer.deserialize_any(SettingVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read<T: Setting>(yaml: &str) -> Result<Templated<T>, String> {
        serde_saphyr::from_str(yaml).map_err(|error| error.to_string())
    }

    fn template<T>(text: &str) -> Result<Templated<T>, String> {
        Ok(Templated::Template(text.into()))
    }

    #[test]
    fn whole_numbers_are_read_from_yaml_and_from_rendered_text() {
        assert_eq!(read::<u32>("3"), Ok(Templated::Literal(3)));
        assert_eq!(read::<u32>("'3'"), Ok(Templated::Literal(3)));
        assert_eq!(read::<u32>("0"), Ok(Templated::Literal(0)));
        assert_eq!(
            read::<u32>("'{{ user_checks }}'"),
            template("{{ user_checks }}")
        );
        assert!(
            read::<u32>("-1")
                .unwrap_err()
                .contains("cannot be negative")
        );
        assert!(read::<u32>("2.5").unwrap_err().contains("not `2.5`"));
        assert!(read::<u32>("true").is_err());
        assert!(read::<u32>("many").is_err());
        assert!(read::<u32>("5000000000").unwrap_err().contains("too big"));
        assert_eq!(u32::from_text("12"), Some(12));
        assert_eq!(u32::from_text(" 4\n"), Some(4));
        assert_eq!(u32::from_text("-1"), None);
        assert_eq!(u32::from_text("lots"), None);
    }

    #[test]
    fn counts_are_at_least_one() {
        assert_eq!(read::<Count>("4"), Ok(Templated::Literal(Count(4))));
        assert_eq!(read::<Count>("'2'"), Ok(Templated::Literal(Count(2))));
        assert_eq!(read::<Count>("'{{ jobs }}'"), template("{{ jobs }}"));
        for zero in ["0", "'0'", "-3"] {
            let error = read::<Count>(zero).unwrap_err();
            assert!(error.contains("must be at least 1"), "{zero}: {error}");
        }
        assert!(
            read::<Count>("four")
                .unwrap_err()
                .contains("must be a whole number of at least 1, not `four`")
        );
        assert!(read::<Count>("1.5").is_err());
        assert_eq!(Count::from_text("8"), Some(Count(8)));
        assert_eq!(Count::from_text("0"), None);
        assert_eq!(Count::from_text("many"), None);
    }

    #[test]
    fn exit_codes_are_0_to_255() {
        assert_eq!(read::<ExitCode>("1"), Ok(Templated::Literal(ExitCode(1))));
        assert_eq!(
            read::<ExitCode>("'255'"),
            Ok(Templated::Literal(ExitCode(255)))
        );
        assert_eq!(read::<ExitCode>("'{{ code }}'"), template("{{ code }}"));
        let error = read::<ExitCode>("300").unwrap_err();
        assert!(error.contains("is too large: `300`"), "{error}");
        assert!(error.contains("from 0 to 255"), "{error}");
        let error = read::<ExitCode>("-1").unwrap_err();
        assert!(error.contains("cannot be negative"), "{error}");
        let error = read::<ExitCode>("one").unwrap_err();
        assert!(
            error.contains("must be a whole number, not `one`"),
            "{error}"
        );
        assert!(read::<ExitCode>("1.5").is_err());
        assert_eq!(ExitCode::from_text("2"), Some(ExitCode(2)));
        assert_eq!(ExitCode::from_text("256"), None);
        assert_eq!(ExitCode::from_text("-1"), None);
    }

    #[test]
    fn booleans_are_yaml_booleans_or_the_text_a_template_renders() {
        assert_eq!(read::<bool>("true"), Ok(Templated::Literal(true)));
        assert_eq!(read::<bool>("false"), Ok(Templated::Literal(false)));
        assert_eq!(read::<bool>("'true'"), Ok(Templated::Literal(true)));
        assert_eq!(read::<bool>("'{{ mirror }}'"), template("{{ mirror }}"));
        for wrong in ["1", "-1", "0.5", "yes-please"] {
            let error = read::<bool>(wrong).unwrap_err();
            assert!(error.contains("must be true or false"), "{wrong}: {error}");
        }
        // What a template renders for a boolean value, and YAML's spellings.
        assert_eq!(bool::from_text("True"), Some(true));
        assert_eq!(bool::from_text("False"), Some(false));
        assert_eq!(bool::from_text("true"), Some(true));
        assert_eq!(bool::from_text("false\n"), Some(false));
        assert_eq!(bool::from_text("yes"), None);
        assert_eq!(bool::from_text("yes-please"), None);
        assert_eq!(bool::from_text(""), None);
        assert!(Templated::Literal(false).is_false());
        assert!(!Templated::<bool>::Template("{{ x }}".into()).is_false());
    }

    #[test]
    fn durations_are_read_from_yaml_and_from_rendered_text() {
        let seconds = |s| Templated::Literal(HumanDuration(Duration::from_secs(s)));
        assert_eq!(read::<HumanDuration>("90s"), Ok(seconds(90)));
        assert_eq!(read::<HumanDuration>("30"), Ok(seconds(30)));
        assert_eq!(
            read::<HumanDuration>("'{{ wait }}'"),
            template("{{ wait }}")
        );
        assert!(
            read::<HumanDuration>("-5")
                .unwrap_err()
                .contains("cannot be negative")
        );
        assert!(read::<HumanDuration>("soon").is_err());
        assert!(read::<HumanDuration>("true").is_err());
        assert_eq!(
            HumanDuration::from_text("5m"),
            Some(HumanDuration(Duration::from_secs(300)))
        );
        assert_eq!(HumanDuration::from_text("soon"), None);
    }

    #[test]
    fn a_plan_notes_what_a_template_rendered_to() {
        let mirror = Templated::<bool>::Template("{{ mirror }}".into());
        assert_eq!(
            mirror.rendered_note("delete", &true).as_deref(),
            Some("`delete: {{ mirror }}` is true")
        );
        assert_eq!(Templated::Literal(3u32).rendered_note("max", &3), None);
    }
}
