//! Consul's flag syntax (Go's `flag` package): single-dash long flags
//! (`-server`, `-bootstrap-expect=3`, `-retry-join x`); `--flag` works too. A
//! bool flag takes no separate value and is turned off only as `-flag=false`.
//! Unlike Go, flags may follow positional arguments (`kv get KEY -recurse`);
//! `--` ends the flags.

/// One flag a command accepts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Spec {
    pub name: &'static str,
    pub takes_value: bool,
}

pub(crate) const fn flag(name: &'static str) -> Spec {
    Spec {
        name,
        takes_value: false,
    }
}

pub(crate) const fn value(name: &'static str) -> Spec {
    Spec {
        name,
        takes_value: true,
    }
}

/// Flags in command-line order (a bool flag's value is "true" unless given)
/// and the positional arguments.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub flags: Vec<(&'static str, String)>,
    pub args: Vec<String>,
    pub help: bool,
}

impl Parsed {
    /// The last value given for `name`.
    pub fn last(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A bool flag: absent is false; `-flag=x` must be a Go bool word.
    pub fn bool(&self, name: &str) -> Result<bool, String> {
        match self.last(name) {
            None => Ok(false),
            Some(v) => crate::config::parse_bool(v)
                .ok_or_else(|| format!("-{name}: must be true or false, got {v:?}")),
        }
    }

    /// A whole-number flag.
    pub fn number(&self, name: &str) -> Result<Option<u64>, String> {
        self.last(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| format!("-{name}: must be a whole number, got {v:?}"))
            })
            .transpose()
    }
}

/// Parse `args` against `specs`. Errors are one line naming the flag, in
/// the words of Go's `flag` package (`flag provided but not defined: -x`,
/// `flag needs an argument: -x`); a command prints its help after them.
/// `-h`, `-help` and `--help` set `help`.
pub(crate) fn parse(args: &[String], specs: &[Spec]) -> Result<Parsed, String> {
    let mut parsed = Parsed::default();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--" {
            parsed.args.extend(rest.cloned());
            break;
        }
        if !is_flag(arg) {
            parsed.args.push(arg.clone());
            continue;
        }
        let (written, inline) = match arg.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (arg.as_str(), None),
        };
        let name = written.trim_start_matches('-');
        if written.starts_with("---") || name.is_empty() {
            return Err(format!("bad flag syntax: {arg}"));
        }
        if matches!(name, "h" | "help") {
            parsed.help = true;
            continue;
        }
        let Some(spec) = specs.iter().find(|s| s.name == name) else {
            return Err(format!("flag provided but not defined: -{name}"));
        };
        let v = match (spec.takes_value, inline) {
            (_, Some(v)) => v,
            (false, None) => "true".to_string(),
            (true, None) => match rest.next() {
                Some(v) => v.clone(),
                None => return Err(format!("flag needs an argument: -{name}")),
            },
        };
        parsed.flags.push((spec.name, v));
    }
    Ok(parsed)
}

/// `-x`, `--xyz`, `-xyz=1` are flags; `-` (stdin) and `-5` are not.
fn is_flag(arg: &str) -> bool {
    let mut chars = arg.chars();
    chars.next() == Some('-')
        && match chars.next() {
            None => false,
            Some(c) => !c.is_ascii_digit() && c != '.',
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    const SPECS: &[Spec] = &[
        flag("server"),
        value("bootstrap-expect"),
        value("retry-join"),
    ];

    #[test]
    fn accepts_go_and_gnu_forms() {
        let p = parse(
            &args("-server --bootstrap-expect=3 -retry-join a --retry-join b x -"),
            SPECS,
        )
        .unwrap();
        assert_eq!(p.bool("server"), Ok(true));
        assert_eq!(p.last("bootstrap-expect"), Some("3"));
        assert_eq!(p.flags.len(), 4);
        assert_eq!(p.args, ["x", "-"]);
    }

    #[test]
    /// Go's `flag` package words (flag.go `failf`), which Consul prints.
    fn errors_are_one_line_naming_the_flag() {
        assert_eq!(
            parse(&args("-foo"), SPECS).unwrap_err(),
            "flag provided but not defined: -foo"
        );
        assert_eq!(
            parse(&args("--foo=1"), SPECS).unwrap_err(),
            "flag provided but not defined: -foo"
        );
        assert_eq!(
            parse(&args("--retry-join"), SPECS).unwrap_err(),
            "flag needs an argument: -retry-join"
        );
        assert_eq!(
            parse(&args("---x"), SPECS).unwrap_err(),
            "bad flag syntax: ---x"
        );
        let p = parse(&args("-server=maybe"), SPECS).unwrap();
        assert_eq!(
            p.bool("server").unwrap_err(),
            "-server: must be true or false, got \"maybe\""
        );
    }

    #[test]
    fn double_dash_ends_flags() {
        let p = parse(&args("-- -server"), SPECS).unwrap();
        assert_eq!(p.args, ["-server"]);
        assert!(p.flags.is_empty());
    }
}
