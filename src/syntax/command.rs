//! A command to run: an argv list (never through a shell), or a script with `shell: true`.

use std::fmt;

use indexmap::IndexMap;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::{ExitCode, HumanDuration, Templated};
use crate::diagnostic::ValueError;

/// What to execute: either a list of arguments (each rendered on its own) or a shell script.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum CommandLine {
    /// Program and arguments; no shell is involved, so spaces and `;` stay inside one argument.
    Argv(Vec<String>),
    /// A script run by `sh -c`; only allowed with `shell: true`.
    Script(String),
}

/// A command with its options. In a playbook it is written either as a bare list
/// (`run: [echo, hi]`) or as a mapping (`run: {command: [...], cwd: ..., timeout: 5m}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandSpec {
    /// What to execute.
    pub command: CommandLine,
    /// Run `command` (a string) through `sh -c`; true, false or a template.
    #[serde(skip_serializing_if = "Templated::is_false")]
    pub shell: Templated<bool>,
    /// Working directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Extra environment variables.
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub env: IndexMap<String, String>,
    /// Kill the whole process group after this long; a duration or a template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Templated<HumanDuration>>,
    /// Exit codes that count as success (default `[0]`); each a number or a template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ok_codes: Option<Vec<Templated<ExitCode>>>,
    /// The command is done if this path exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creates: Option<String>,
}

/// The long form, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandOptions {
    command: RawCommandLine,
    #[serde(default)]
    shell: Templated<bool>,
    cwd: Option<String>,
    #[serde(default)]
    env: IndexMap<String, String>,
    timeout: Option<Templated<HumanDuration>>,
    ok_codes: Option<Vec<Templated<ExitCode>>>,
    creates: Option<String>,
}

struct RawCommandLine(CommandLine);

impl<'de> Deserialize<'de> for RawCommandLine {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LineVisitor;
        impl<'de> Visitor<'de> for LineVisitor {
            type Value = RawCommandLine;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of arguments, or a script string with `shell: true`")
            }
            fn visit_str<E: de::Error>(self, script: &str) -> Result<Self::Value, E> {
                Ok(RawCommandLine(CommandLine::Script(script.to_string())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Ok(RawCommandLine(CommandLine::Argv(argv_from_seq(seq)?)))
            }
        }
        deserializer.deserialize_any(LineVisitor)
    }
}

/// Reads argv elements; numbers and booleans are taken as their text (`[sleep, 5]`).
fn argv_from_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Vec<String>, A::Error> {
    let mut argv = Vec::new();
    while let Some(argument) = seq.next_element::<ArgText>()? {
        argv.push(argument.0);
    }
    if argv.is_empty() {
        return Err(de::Error::custom(ValueError::new(
            "the command is empty",
            "name a program and its arguments, e.g. `{key}: [echo, hello]`",
        )));
    }
    Ok(argv)
}

/// One argument: a string, or a scalar taken as its text.
struct ArgText(String);

impl<'de> Deserialize<'de> for ArgText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ArgVisitor;
        impl Visitor<'_> for ArgVisitor {
            type Value = ArgText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ArgText, E> {
                Ok(ArgText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ArgText, E> {
                Ok(ArgText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ArgText, E> {
                Ok(ArgText(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ArgText, E> {
                Ok(ArgText(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ArgText, E> {
                Ok(ArgText(v.to_string()))
            }
        }
        deserializer.deserialize_any(ArgVisitor)
    }
}

impl<'de> Deserialize<'de> for CommandSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SpecVisitor;
        impl<'de> Visitor<'de> for SpecVisitor {
            type Value = CommandSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of arguments, or a mapping with `command:`")
            }
            fn visit_str<E: de::Error>(self, _script: &str) -> Result<Self::Value, E> {
                Err(E::custom(ValueError::new(
                    "a command written as a string needs a shell",
                    "write it as a list of arguments, e.g. `{key}: [echo, hello]`, or run it \
                     with `sh -c`: `{key}: {command: \"...\", shell: true}`",
                )))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Ok(CommandSpec {
                    command: CommandLine::Argv(argv_from_seq(seq)?),
                    shell: Templated::Literal(false),
                    cwd: None,
                    env: IndexMap::new(),
                    timeout: None,
                    ok_codes: None,
                    creates: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let options =
                    CommandOptions::deserialize(de::value::MapAccessDeserializer::new(map))?;
                // A templated `shell` is checked against `command` once rendered
                // ([`CommandSpec::check_shell`]).
                let shell = match options.shell {
                    Templated::Literal(shell) => Some(shell),
                    Templated::Template(_) => None,
                };
                match (&options.command.0, shell) {
                    (CommandLine::Script(_), Some(false)) => {
                        return Err(de::Error::custom(
                            ValueError::new(
                                "`command` is a string, which needs a shell",
                                "add `shell: true` to run it with `sh -c`, or write the command \
                                 as a list of arguments, e.g. `command: [echo, hello]`",
                            )
                            .about_key("command"),
                        ));
                    }
                    (CommandLine::Argv(argv), Some(true)) => {
                        let script = argv.join(" ");
                        let example = if script.contains(['"', '\\']) {
                            "command: \"...\"".to_string()
                        } else {
                            format!("command: \"{script}\"")
                        };
                        return Err(de::Error::custom(
                            ValueError::new(
                                "`shell: true` needs the script as one string, but `command` is \
                                 a list",
                                format!(
                                    "write `{example}`, or remove `shell: true` to run the list \
                                     without a shell"
                                ),
                            )
                            .about_key("command"),
                        ));
                    }
                    _ => {}
                }
                Ok(CommandSpec {
                    command: options.command.0,
                    shell: options.shell,
                    cwd: options.cwd,
                    env: options.env,
                    timeout: options.timeout,
                    ok_codes: options.ok_codes,
                    creates: options.creates,
                })
            }
        }
        deserializer.deserialize_any(SpecVisitor)
    }
}

impl CommandSpec {
    /// Whether a rendered `shell` fits `command`: a script needs a shell and a shell needs
    /// a script. The loader checks a literal `shell`; this, what a template rendered to.
    pub fn check_shell(&self, shell: bool) -> Result<(), String> {
        match (&self.command, shell) {
            (CommandLine::Script(_), false) => {
                Err("`command` is a string, which needs a shell, and `shell` is false".to_string())
            }
            (CommandLine::Argv(_), true) => Err(
                "`shell` is true, which needs the script as one string, but `command` is a list"
                    .to_string(),
            ),
            _ => Ok(()),
        }
    }

    /// Every string in the command that may hold a template.
    pub fn templates(&self) -> Vec<&str> {
        let mut templates: Vec<&str> = match &self.command {
            CommandLine::Argv(argv) => argv.iter().map(String::as_str).collect(),
            CommandLine::Script(script) => vec![script.as_str()],
        };
        templates.extend(self.cwd.as_deref());
        templates.extend(self.creates.as_deref());
        templates.extend(self.env.values().map(String::as_str));
        templates
    }
}
