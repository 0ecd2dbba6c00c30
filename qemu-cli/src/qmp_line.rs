//! One line of QMP shell input: a JSON request, or `name key=value ...` like QEMU's
//! `qmp-shell`.
//!
//! In the short form, a value is read as JSON when it is a number, `true`, `false`, `null`, a
//! list `[...]`, an object `{...}` or a double-quoted string; a single-quoted value is taken
//! literally; anything else is a string. A dotted key builds nested objects:
//! `blockdev-add driver=file node-name=f0 filename=/tmp/a.img` or
//! `device_add driver=virtio-net-pci id=n1 netdev=u1`, and
//! `object-add qom-type=secret id=s0 data='a b'`; `a.b=1 a.c=2` gives `{"a": {"b": 1, "c": 2}}`.
//!
//! qmp-shell's transaction syntax is read by [`Reader`]: a line `transaction(` opens a
//! transaction, each following line is one action (`TYPE key=value ...`, or a JSON object
//! `{"type": ..., "data": ...}`), and a line `)` (or an action line ending in ` )`) closes it;
//! only then is the whole transaction one `transaction` command. A transaction is never run
//! action by action: an invalid action line poisons it, and it is not sent when it closes.

use serde_json::{Map, Value};

/// What a line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// Nothing: a blank line or a `#` comment.
    Empty,
    /// A QMP command.
    Command {
        /// The command name.
        name: String,
        /// Its arguments, if any.
        arguments: Option<Value>,
    },
}

/// What a line of input gives, read with the transaction syntax.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Nothing to do: a blank line or a comment.
    Empty,
    /// A command to execute now (a transaction, once closed, is one).
    Command {
        /// The command name.
        name: String,
        /// Its arguments, if any.
        arguments: Option<Value>,
    },
    /// A line taken into the open transaction (nothing is sent yet).
    Pending,
}

/// Reads lines with qmp-shell's transaction syntax (see the module docs).
#[derive(Debug, Default)]
pub struct Reader {
    transaction: Option<Transaction>,
}

#[derive(Debug, Default)]
struct Transaction {
    actions: Vec<Value>,
    /// The first invalid action line, if any: the transaction will not be sent.
    poisoned: Option<String>,
}

impl Reader {
    /// A reader outside any transaction.
    pub fn new() -> Reader {
        Reader::default()
    }

    /// Whether a transaction is open (the prompt says `TRANS>`).
    pub fn in_transaction(&self) -> bool {
        self.transaction.is_some()
    }

    /// Drops an open transaction without sending it; returns whether there was one.
    pub fn abandon(&mut self) -> bool {
        self.transaction.take().is_some()
    }

    /// Reads one line. An error is about this line; inside a transaction it also means the
    /// transaction will not be sent (its closing line says so again).
    pub fn feed(&mut self, line: &str) -> Result<Input, String> {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            return Ok(Input::Empty);
        }
        let mut rest = trimmed;
        if self.transaction.is_none() {
            match rest.strip_prefix("transaction(") {
                Some(after) if after.is_empty() || after.starts_with(char::is_whitespace) => {
                    self.transaction = Some(Transaction::default());
                    rest = after.trim_start();
                }
                _ => {
                    return parse(line).map(|l| match l {
                        Line::Empty => Input::Empty,
                        Line::Command { name, arguments } => Input::Command { name, arguments },
                    })
                }
            }
        } else if rest.starts_with("transaction(") {
            self.poison("a transaction inside a transaction".into());
            return Err("a transaction inside a transaction (close the open one with ')')".into());
        }
        // Inside a transaction: an action, then perhaps the closing parenthesis.
        let (action, closes) = match rest.strip_suffix(')') {
            Some(before) if before.is_empty() || before.ends_with(char::is_whitespace) => {
                (before.trim_end(), true)
            }
            _ => (rest, false),
        };
        let mut error = None;
        if !action.is_empty() {
            match parse_action(action) {
                Ok(a) => {
                    if let Some(t) = self.transaction.as_mut() {
                        t.actions.push(a);
                    }
                }
                Err(e) => {
                    self.poison(e.clone());
                    error = Some(e);
                }
            }
        }
        if !closes {
            return match error {
                Some(e) => Err(format!("{e}; the transaction will not be sent")),
                None => Ok(Input::Pending),
            };
        }
        let t = self.transaction.take().unwrap_or_default();
        if let Some(first) = t.poisoned {
            return Err(format!(
                "transaction not sent: an action was invalid ({first})"
            ));
        }
        Ok(Input::Command {
            name: "transaction".into(),
            arguments: Some(serde_json::json!({ "actions": t.actions })),
        })
    }

    fn poison(&mut self, why: String) {
        if let Some(t) = self.transaction.as_mut() {
            t.poisoned.get_or_insert(why);
        }
    }
}

/// One action of a transaction: `TYPE key=value ...` or `{"type": ..., "data": {...}}`.
fn parse_action(text: &str) -> Result<Value, String> {
    if text.starts_with('{') {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("not a valid JSON action: {e}"))?;
        let Value::Object(map) = &value else {
            unreachable!("starts with a brace");
        };
        if !map.get("type").is_some_and(Value::is_string) {
            return Err("a JSON action needs \"type\": \"ACTION\"".into());
        }
        if let Some(key) = map.keys().find(|k| *k != "type" && *k != "data") {
            return Err(format!(
                "unknown member {key:?} in the action (expected type, data)"
            ));
        }
        let mut value = value;
        if let Value::Object(map) = &mut value {
            map.entry("data")
                .or_insert_with(|| Value::Object(Map::new()));
        }
        return Ok(value);
    }
    match parse(text)? {
        Line::Command { name, arguments } => Ok(serde_json::json!({
            "type": name,
            "data": arguments.unwrap_or_else(|| Value::Object(Map::new())),
        })),
        Line::Empty => Err("an empty action".into()),
    }
}

/// Parses one line of input.
pub fn parse(line: &str) -> Result<Line, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(Line::Empty);
    }
    if line.starts_with('{') {
        return parse_json_request(line);
    }
    let tokens = tokenize(line)?;
    let (name, args) = tokens.split_first().expect("a non-empty line has a token");
    if name.contains('=') || !is_command_name(name) {
        return Err(format!(
            "{name:?} is not a command name (write NAME key=value ..., or a JSON request)"
        ));
    }
    if args.is_empty() {
        return Ok(Line::Command {
            name: name.clone(),
            arguments: None,
        });
    }
    let mut map = Map::new();
    for arg in args {
        let Some((key, raw)) = arg.split_once('=') else {
            return Err(format!("{arg:?} is not key=value"));
        };
        if key.is_empty() {
            return Err(format!("{arg:?} has an empty key"));
        }
        let value = parse_value(raw).map_err(|e| format!("value of {key}: {e}"))?;
        insert_dotted(&mut map, key, value)?;
    }
    Ok(Line::Command {
        name: name.clone(),
        arguments: Some(Value::Object(map)),
    })
}

fn is_command_name(name: &str) -> bool {
    name.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
}

fn parse_json_request(line: &str) -> Result<Line, String> {
    let value: Value =
        serde_json::from_str(line).map_err(|e| format!("not a valid JSON request: {e}"))?;
    let Value::Object(mut map) = value else {
        unreachable!("starts with a brace");
    };
    let name = match map.remove("execute") {
        Some(Value::String(s)) => s,
        Some(other) => return Err(format!("\"execute\" must be a string, not {other}")),
        None => return Err("a JSON request needs \"execute\": \"COMMAND\"".into()),
    };
    let arguments = match map.remove("arguments") {
        None => None,
        Some(v @ Value::Object(_)) => Some(v),
        Some(other) => return Err(format!("\"arguments\" must be an object, not {other}")),
    };
    // The shell numbers requests itself; a given id is accepted and not used.
    map.remove("id");
    if let Some(key) = map.keys().next() {
        return Err(format!(
            "unknown member {key:?} in the request (expected execute, arguments, id)"
        ));
    }
    Ok(Line::Command { name, arguments })
}

/// Splits on whitespace outside quotes and outside `[...]`/`{...}`.
fn tokenize(line: &str) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut in_token = false;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut depth = 0usize;
    for c in line.chars() {
        if let Some(q) = quote {
            current.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' && q == '"' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => {
                quote = Some(c);
                current.push(c);
                in_token = true;
            }
            '[' | '{' => {
                depth += 1;
                current.push(c);
                in_token = true;
            }
            ']' | '}' => {
                depth = depth.saturating_sub(1);
                current.push(c);
                in_token = true;
            }
            c if c.is_whitespace() && depth == 0 => {
                if in_token {
                    tokens.push(std::mem::take(&mut current));
                    in_token = false;
                }
            }
            c => {
                current.push(c);
                in_token = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("unterminated {q} quote"));
    }
    if depth > 0 {
        return Err("unbalanced [ or { in the line".into());
    }
    if in_token {
        tokens.push(current);
    }
    Ok(tokens)
}

/// A value of the short form (see the module docs).
fn parse_value(raw: &str) -> Result<Value, String> {
    if let Some(inner) = raw.strip_prefix('\'') {
        return inner
            .strip_suffix('\'')
            .map(|s| Value::String(s.to_owned()))
            .ok_or_else(|| format!("{raw:?}: text after the closing quote"));
    }
    let first = raw.chars().next();
    if matches!(first, Some('"' | '[' | '{')) {
        return serde_json::from_str(raw).map_err(|e| format!("{raw:?} is not valid JSON: {e}"));
    }
    match raw {
        "true" => return Ok(Value::Bool(true)),
        "false" => return Ok(Value::Bool(false)),
        "null" => return Ok(Value::Null),
        _ => {}
    }
    if first.is_some_and(|c| c.is_ascii_digit() || c == '-') {
        if let Ok(n @ Value::Number(_)) = serde_json::from_str::<Value>(raw) {
            return Ok(n);
        }
    }
    Ok(Value::String(raw.to_owned()))
}

fn insert_dotted(map: &mut Map<String, Value>, key: &str, value: Value) -> Result<(), String> {
    let mut parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("{key:?}: empty part in a dotted key"));
    }
    let last = parts.pop().expect("split yields one part at least");
    let mut node = map;
    for (i, part) in parts.iter().enumerate() {
        let entry = node
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        node = match entry {
            Value::Object(m) => m,
            _ => {
                return Err(format!(
                    "{key:?}: {} is already a value, not an object",
                    parts[..=i].join(".")
                ))
            }
        };
    }
    if node.contains_key(last) {
        return Err(format!("{key:?} is given twice"));
    }
    node.insert(last.to_owned(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cmd(line: &str) -> (String, Option<Value>) {
        match parse(line).unwrap() {
            Line::Command { name, arguments } => (name, arguments),
            Line::Empty => panic!("{line:?} parsed as empty"),
        }
    }

    #[test]
    fn bare_command_and_blank_lines() {
        assert_eq!(cmd("query-status"), ("query-status".into(), None));
        assert_eq!(cmd("  stop  "), ("stop".into(), None));
        assert_eq!(parse("").unwrap(), Line::Empty);
        assert_eq!(parse("   # a comment").unwrap(), Line::Empty);
    }

    #[test]
    fn key_values_with_types() {
        let (name, args) = cmd(
            "device_add driver=virtio-net-pci id=n1 bus=pcie.0 addr=0x5 \
             mq=true vectors=4 ratio=-1.5 x=null",
        );
        assert_eq!(name, "device_add");
        assert_eq!(
            args.unwrap(),
            json!({"driver": "virtio-net-pci", "id": "n1", "bus": "pcie.0", "addr": "0x5",
                   "mq": true, "vectors": 4, "ratio": -1.5, "x": null})
        );
    }

    #[test]
    fn quoting_json_values_and_dotted_keys() {
        let (_, args) = cmd(
            r#"object-add qom-type=secret id='007' data='a b=c' label="x \"y\"" list=[1, 2] obj={"k": "v w"} a.b=1 a.c.d=true"#,
        );
        assert_eq!(
            args.unwrap(),
            json!({"qom-type": "secret", "id": "007", "data": "a b=c", "label": "x \"y\"",
                   "list": [1, 2], "obj": {"k": "v w"}, "a": {"b": 1, "c": {"d": true}}})
        );
    }

    #[test]
    fn json_requests() {
        assert_eq!(
            cmd(r#"{"execute": "query-block"}"#),
            ("query-block".into(), None)
        );
        assert_eq!(
            cmd(
                r#"{"execute": "human-monitor-command", "arguments": {"command-line": "info"}, "id": 7}"#
            ),
            (
                "human-monitor-command".into(),
                Some(json!({"command-line": "info"}))
            )
        );
    }

    fn feed_all(reader: &mut Reader, lines: &[&str]) -> Vec<Result<Input, String>> {
        lines.iter().map(|l| reader.feed(l)).collect()
    }

    #[test]
    fn a_transaction_is_one_command_when_it_closes() {
        let mut r = Reader::new();
        let got = feed_all(
            &mut r,
            &[
                "transaction(",
                "block-dirty-bitmap-add node=d0 name=b0",
                "# a comment",
                r#"{"type": "block-dirty-bitmap-clear", "data": {"node": "d0", "name": "b1"}}"#,
                "abort",
            ],
        );
        assert!(r.in_transaction());
        assert_eq!(
            got,
            [
                Ok(Input::Pending),
                Ok(Input::Pending),
                Ok(Input::Empty),
                Ok(Input::Pending),
                Ok(Input::Pending)
            ]
        );
        assert_eq!(
            r.feed(")").unwrap(),
            Input::Command {
                name: "transaction".into(),
                arguments: Some(json!({"actions": [
                    {"type": "block-dirty-bitmap-add", "data": {"node": "d0", "name": "b0"}},
                    {"type": "block-dirty-bitmap-clear", "data": {"node": "d0", "name": "b1"}},
                    {"type": "abort", "data": {}},
                ]})),
            }
        );
        assert!(!r.in_transaction());
        // Opening and closing on action lines; a plain command afterwards.
        assert_eq!(
            r.feed("transaction( abort").unwrap(),
            Input::Pending,
            "an action on the opening line"
        );
        assert_eq!(
            r.feed("abort )").unwrap(),
            Input::Command {
                name: "transaction".into(),
                arguments: Some(json!({"actions": [
                    {"type": "abort", "data": {}}, {"type": "abort", "data": {}}
                ]})),
            }
        );
        assert_eq!(
            r.feed("query-status").unwrap(),
            Input::Command {
                name: "query-status".into(),
                arguments: None
            }
        );
        // A value ending in a parenthesis does not close it.
        r.feed("transaction(").unwrap();
        assert_eq!(r.feed("abort x=a)").unwrap(), Input::Pending);
        assert!(r.in_transaction());
        assert!(r.abandon());
        assert!(!r.abandon());
    }

    #[test]
    fn an_invalid_action_keeps_the_whole_transaction_from_being_sent() {
        let mut r = Reader::new();
        r.feed("transaction(").unwrap();
        let e = r.feed("abort junk").unwrap_err();
        assert!(e.contains("\"junk\" is not key=value"), "{e}");
        assert!(e.contains("will not be sent"), "{e}");
        // The following lines are still taken into the transaction, never run on their own.
        assert_eq!(r.feed("abort").unwrap(), Input::Pending);
        assert_eq!(
            r.feed(r#"{"data": {}}"#).unwrap_err(),
            "a JSON action needs \"type\": \"ACTION\"; the transaction will not be sent"
        );
        let e = r.feed(")").unwrap_err();
        assert!(e.starts_with("transaction not sent"), "{e}");
        assert!(!r.in_transaction());
        r.feed("transaction(").unwrap();
        assert!(r.feed("transaction(").is_err());
        assert!(r.feed(")").is_err());
    }

    #[test]
    fn errors_name_the_problem() {
        let err = |l: &str| parse(l).unwrap_err();
        assert!(err("{\"execute\": ").contains("not a valid JSON request"));
        assert!(err(r#"{"arguments": {}}"#).contains("needs \"execute\""));
        assert!(err(r#"{"execute": 5}"#).contains("must be a string"));
        assert!(err(r#"{"execute": "x", "arguments": []}"#).contains("must be an object"));
        assert!(err(r#"{"execute": "x", "argumnets": {}}"#).contains("\"argumnets\""));
        assert!(err("a=1").contains("not a command name"));
        assert!(err("query-status junk").contains("\"junk\" is not key=value"));
        assert!(err("x =1").contains("empty key"));
        assert!(err("x a='b").contains("unterminated ' quote"));
        assert!(err("x a=[1, 2").contains("unbalanced"));
        assert!(err("x a={bad}").contains("value of a"));
        assert!(err("x a=1 a=2").contains("given twice"));
        assert!(err("x a=1 a.b=2").contains("already a value"));
        assert!(err("x a..b=2").contains("empty part"));
        assert!(err("x a='b'c").contains("after the closing quote"));
    }
}
