//! A small parser for protobuf text format, enough for Triton `config.pbtxt` files.
//!
//! It produces an untyped tree of fields ([`Field`]); [`super::config`] walks the tree into a typed
//! model configuration and rejects fields it does not support. Supported syntax: `name: scalar`,
//! `name { ... }`, `name: { ... }`, `name: [ v, ... ]` lists of scalars or messages, `name [ ... ]`,
//! `#` comments, optional `,`/`;` separators, double- or single-quoted strings with C escapes,
//! numbers (integers, floats, signs) and identifiers (enum values, `true`/`false`).

/// A parsed field value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A quoted string, unescaped.
    Str(String),
    /// A number or identifier, as written.
    Word(String),
    /// A nested message.
    Message(Vec<Field>),
}

/// One `name: value` occurrence. Repeated fields appear once per element.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// Field name.
    pub name: String,
    /// 1-based line where the field starts.
    pub line: usize,
    /// The value.
    pub value: Value,
}

/// A syntax error with its position.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct SyntaxError {
    /// 1-based line.
    pub line: usize,
    /// What was wrong.
    pub message: String,
}

/// Deepest nesting accepted; real configurations nest four or five levels.
const MAX_DEPTH: usize = 32;

/// Parses a text-format document into its top-level fields.
///
/// # Errors
/// [`SyntaxError`] at the first malformed token, with its line.
pub fn parse(text: &str) -> Result<Vec<Field>, SyntaxError> {
    let mut parser = Parser {
        chars: text.chars().collect(),
        pos: 0,
        line: 1,
    };
    let fields = parser.fields(None, 0)?;
    Ok(fields)
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    line: usize,
}

impl Parser {
    fn err<T>(&self, message: impl Into<String>) -> Result<T, SyntaxError> {
        Err(SyntaxError {
            line: self.line,
            message: message.into(),
        })
    }

    fn skip_space(&mut self) {
        while let Some(&c) = self.chars.get(self.pos) {
            match c {
                '\n' => {
                    self.line += 1;
                    self.pos += 1;
                }
                '#' => {
                    while self.chars.get(self.pos).is_some_and(|&c| c != '\n') {
                        self.pos += 1;
                    }
                }
                c if c.is_whitespace() => self.pos += 1,
                _ => break,
            }
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_space();
        self.chars.get(self.pos).copied()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn fields(&mut self, close: Option<char>, depth: usize) -> Result<Vec<Field>, SyntaxError> {
        if depth > MAX_DEPTH {
            return self.err("messages nested too deeply");
        }
        let mut fields = Vec::new();
        loop {
            match self.peek() {
                None if close.is_none() => return Ok(fields),
                None => return self.err(format!("missing '{}'", close.unwrap_or('}'))),
                Some(c) if Some(c) == close => {
                    self.pos += 1;
                    return Ok(fields);
                }
                Some(_) => {}
            }
            let line = self.line;
            let name = self.word()?;
            if name.is_empty()
                || !name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            {
                return self.err(format!("expected a field name, found '{}'", self.found()));
            }
            let colon = self.eat(':');
            if self.eat('[') {
                self.list(&name, line, depth, &mut fields)?;
            } else if self.peek() == Some('{') || self.peek() == Some('<') {
                let open = self.chars[self.pos];
                self.pos += 1;
                let inner = self.fields(Some(if open == '{' { '}' } else { '>' }), depth + 1)?;
                fields.push(Field {
                    name,
                    line,
                    value: Value::Message(inner),
                });
            } else if colon {
                let value = self.scalar()?;
                fields.push(Field { name, line, value });
            } else {
                return self.err(format!("expected ':' or '{{' after '{name}'"));
            }
            if !self.eat(',') {
                self.eat(';');
            }
        }
    }

    fn list(
        &mut self,
        name: &str,
        line: usize,
        depth: usize,
        out: &mut Vec<Field>,
    ) -> Result<(), SyntaxError> {
        if self.eat(']') {
            return Ok(());
        }
        loop {
            let value = if self.eat('{') {
                Value::Message(self.fields(Some('}'), depth + 1)?)
            } else {
                self.scalar()?
            };
            out.push(Field {
                name: name.to_string(),
                line,
                value,
            });
            if self.eat(']') {
                return Ok(());
            }
            if !self.eat(',') {
                return self.err(format!("expected ',' or ']' in list '{name}'"));
            }
        }
    }

    fn found(&self) -> String {
        self.chars
            .get(self.pos)
            .map_or_else(|| "end of file".into(), |c| c.to_string())
    }

    fn word(&mut self) -> Result<String, SyntaxError> {
        self.skip_space();
        let start = self.pos;
        while self
            .chars
            .get(self.pos)
            .is_some_and(|&c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '.'))
        {
            self.pos += 1;
        }
        Ok(self.chars[start..self.pos].iter().collect())
    }

    fn scalar(&mut self) -> Result<Value, SyntaxError> {
        match self.peek() {
            Some(q @ ('"' | '\'')) => {
                self.pos += 1;
                let mut s = self.string(q)?;
                // Adjacent string literals concatenate.
                while let Some(q @ ('"' | '\'')) = self.peek() {
                    self.pos += 1;
                    s.push_str(&self.string(q)?);
                }
                Ok(Value::Str(s))
            }
            _ => {
                let w = self.word()?;
                if w.is_empty() {
                    return self.err(format!("expected a value, found '{}'", self.found()));
                }
                Ok(Value::Word(w))
            }
        }
    }

    fn string(&mut self, quote: char) -> Result<String, SyntaxError> {
        let mut s = String::new();
        loop {
            let Some(&c) = self.chars.get(self.pos) else {
                return self.err("unterminated string");
            };
            self.pos += 1;
            match c {
                '\n' => return self.err("newline in string"),
                c if c == quote => return Ok(s),
                '\\' => {
                    let Some(&e) = self.chars.get(self.pos) else {
                        return self.err("unterminated string");
                    };
                    self.pos += 1;
                    s.push(match e {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        '0' => '\0',
                        '\\' | '\'' | '"' => e,
                        other => return self.err(format!("unsupported escape '\\{other}'")),
                    });
                }
                c => s.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_shapes_triton_configs_use() {
        let text = r#"
            name: "m"  # comment
            max_batch_size: 8
            input [ { name: "a", data_type: TYPE_FP32, dims: [ -1, 3 ] } ]
            instance_group { count: 2 kind: KIND_CPU };
            parameters: { key: "k" value: { string_value: 'v\n' } }
        "#;
        let fields = parse(text).unwrap();
        let names: Vec<_> = fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "name",
                "max_batch_size",
                "input",
                "instance_group",
                "parameters"
            ]
        );
        assert_eq!(fields[0].value, Value::Str("m".into()));
        let Value::Message(input) = &fields[2].value else {
            panic!()
        };
        let dims: Vec<_> = input
            .iter()
            .filter(|f| f.name == "dims")
            .map(|f| f.value.clone())
            .collect();
        assert_eq!(dims, [Value::Word("-1".into()), Value::Word("3".into())]);
        assert_eq!(fields[3].line, 5);
    }

    #[test]
    fn reports_line_of_syntax_errors() {
        let e = parse("name: \"m\"\nmax_batch_size 8\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("expected ':'"), "{e}");
        assert!(
            parse("input { name: \"a\"")
                .unwrap_err()
                .message
                .contains("missing '}'")
        );
        assert!(
            parse("name: \"abc")
                .unwrap_err()
                .message
                .contains("unterminated")
        );
    }
}
