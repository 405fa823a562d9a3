//! Reading the platform's users — its SQLite user database, or a CSV or
//! JSON export of it — into rows of the fields the import knows, found by
//! column name (case-insensitive, with a few aliases each; other columns
//! are ignored). Nothing here judges a value beyond its type: that is the
//! import's ([`super::plan`]).

use std::collections::BTreeMap;
use std::path::Path;

/// How the file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A SQLite database (the platform's user database).
    Sqlite,
    /// Comma-separated values with a header line.
    Csv,
    /// A JSON array of objects, or `{"users": [...]}`.
    Json,
}

/// A field of an imported user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Field {
    /// Login email.
    Email,
    /// Application name.
    AppName,
    /// Application id, kept as it is.
    AppId,
    /// Application secret, kept as it is (stored hashed).
    AppSecret,
    /// Hash of the login password.
    PasswordHash,
    /// Admin rights.
    Admin,
}

impl Field {
    /// Every field, in the order they are documented.
    pub const ALL: [Field; 6] = [
        Field::Email,
        Field::AppName,
        Field::AppId,
        Field::AppSecret,
        Field::PasswordHash,
        Field::Admin,
    ];

    /// The column names (and JSON keys) taken for this field, canonical
    /// first; compared case-insensitively, `-` and spaces read as `_`.
    pub fn names(self) -> &'static [&'static str] {
        match self {
            Field::Email => &["email", "email_address", "mail", "user_email"],
            Field::AppName => &["app_name", "appname", "application_name", "application"],
            Field::AppId => &["app_id", "appid", "application_id", "client_id"],
            Field::AppSecret => &[
                "app_secret",
                "appsecret",
                "application_secret",
                "client_secret",
                "secret",
            ],
            Field::PasswordHash => &[
                "password_hash",
                "passwordhash",
                "hashed_password",
                "password_digest",
                "pwd_hash",
                "password",
            ],
            Field::Admin => &["is_admin", "isadmin", "admin", "is_superuser"],
        }
    }

    /// The canonical column name.
    pub fn name(self) -> &'static str {
        self.names()[0]
    }

    /// Whether every row must have it.
    pub fn required(self) -> bool {
        matches!(self, Field::Email | Field::AppId | Field::AppSecret)
    }

    /// The field a column (or key) of this name holds, if any.
    pub fn of_column(column: &str) -> Option<Field> {
        let key: String = column
            .trim()
            .chars()
            .map(|c| match c {
                '-' | ' ' => '_',
                c => c.to_ascii_lowercase(),
            })
            .collect();
        Field::ALL
            .into_iter()
            .find(|f| f.names().contains(&key.as_str()))
    }

    /// "email (or email_address, mail, user_email)" for error messages.
    pub fn described(self) -> String {
        format!("{} (or {})", self.name(), self.names()[1..].join(", "))
    }
}

/// A value as the file holds it.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    /// Text.
    Text(String),
    /// An integer (SQLite INTEGER, a JSON number).
    Int(i64),
    /// A JSON boolean.
    Bool(bool),
}

/// One user as read: where it is in the file (`row 3`, `line 4`,
/// `users[2]`), its fields (absent when empty or NULL), and what is wrong
/// with how it is written (a value of a type its field cannot take).
pub struct RawRow {
    /// Its place in the file, for messages.
    pub at: String,
    /// Its fields.
    pub fields: BTreeMap<Field, Value>,
    /// Problems found while reading it.
    pub problems: Vec<String>,
}

/// Why a file could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file cannot be opened or is not what its format says.
    #[error("{0}")]
    Unreadable(String),
    /// A required field has no column.
    #[error("{source_name} has no column for {field}; columns: {columns}")]
    MissingColumn {
        /// "the users table", "the header line".
        source_name: String,
        /// The field and its accepted names.
        field: String,
        /// The columns there are.
        columns: String,
    },
    /// Two columns name one field.
    #[error("columns {first:?} and {second:?} both hold {field}")]
    AmbiguousColumns {
        /// The field's canonical name.
        field: &'static str,
        /// One column.
        first: String,
        /// The other.
        second: String,
    },
}

/// The format of `path`: by its extension (`.db`, `.sqlite`, `.sqlite3`;
/// `.csv`; `.json`), else by its first bytes.
pub fn detect(path: &Path) -> Result<Format, ReadError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("db" | "sqlite" | "sqlite3") => return Ok(Format::Sqlite),
        Some("csv") => return Ok(Format::Csv),
        Some("json") => return Ok(Format::Json),
        _ => {}
    }
    use std::io::Read;
    let mut head = [0u8; 64];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| ReadError::Unreadable(format!("cannot read {}: {e}", path.display())))?;
    let head = &head[..n];
    if head.starts_with(b"SQLite format 3\0") {
        Ok(Format::Sqlite)
    } else if head
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| matches!(b, b'[' | b'{'))
    {
        Ok(Format::Json)
    } else {
        Ok(Format::Csv)
    }
}

/// Reads every user of `path`, written as `format`; `table` names the
/// users table of a SQLite file.
pub fn read(path: &Path, format: Format, table: &str) -> Result<Vec<RawRow>, ReadError> {
    match format {
        Format::Sqlite => read_sqlite(path, table),
        Format::Csv => read_csv(path),
        Format::Json => read_json(path),
    }
}

/// Maps each column to its field; refuses a file without a column for a
/// required field, or with two columns for one field.
fn columns_to_fields(
    columns: &[String],
    source_name: &str,
) -> Result<Vec<Option<Field>>, ReadError> {
    let mapped: Vec<Option<Field>> = columns.iter().map(|c| Field::of_column(c)).collect();
    for field in Field::ALL {
        let mut holders = columns
            .iter()
            .zip(&mapped)
            .filter(|(_, f)| **f == Some(field))
            .map(|(c, _)| c);
        match (holders.next(), holders.next()) {
            (None, _) if field.required() => {
                return Err(ReadError::MissingColumn {
                    source_name: source_name.to_owned(),
                    field: field.described(),
                    columns: columns.join(", "),
                });
            }
            (Some(first), Some(second)) => {
                return Err(ReadError::AmbiguousColumns {
                    field: field.name(),
                    first: first.clone(),
                    second: second.clone(),
                });
            }
            _ => {}
        }
    }
    Ok(mapped)
}

fn read_sqlite(path: &Path, table: &str) -> Result<Vec<RawRow>, ReadError> {
    use rusqlite::types::ValueRef;
    let unreadable = |e: rusqlite::Error| {
        ReadError::Unreadable(format!(
            "{} is not a readable SQLite database: {e}",
            path.display()
        ))
    };
    if !path.is_file() {
        return Err(ReadError::Unreadable(format!(
            "{} does not exist or is not a file",
            path.display()
        )));
    }
    let db = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(unreadable)?;
    // The table, named case-insensitively.
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name")
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()
        })
        .map_err(unreadable)?;
    let Some(name) = tables.iter().find(|t| t.eq_ignore_ascii_case(table)) else {
        return Err(ReadError::Unreadable(format!(
            "{} has no table {table:?} (tables: {}); name the users table with --table",
            path.display(),
            if tables.is_empty() {
                "none".to_owned()
            } else {
                tables.join(", ")
            }
        )));
    };
    let mut stmt = db
        .prepare(&format!("SELECT * FROM \"{}\"", name.replace('"', "\"\"")))
        .map_err(unreadable)?;
    let columns: Vec<String> = stmt.column_names().into_iter().map(str::to_owned).collect();
    let fields = columns_to_fields(&columns, &format!("the {name} table"))?;
    let mut rows = stmt.query([]).map_err(unreadable)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(unreadable)? {
        let mut r = RawRow {
            at: format!("row {}", out.len() + 1),
            fields: BTreeMap::new(),
            problems: Vec::new(),
        };
        for (i, field) in fields.iter().enumerate() {
            let Some(field) = *field else { continue };
            let value = match row.get_ref(i).map_err(unreadable)? {
                ValueRef::Null => None,
                ValueRef::Integer(n) => Some(Value::Int(n)),
                ValueRef::Real(x) => Some(Value::Text(x.to_string())),
                ValueRef::Text(t) | ValueRef::Blob(t) => match std::str::from_utf8(t) {
                    Ok(s) => Some(Value::Text(s.to_owned())),
                    Err(_) => {
                        r.problems
                            .push(format!("column {} is not UTF-8 text", columns[i]));
                        None
                    }
                },
            };
            if let Some(v) = value {
                r.fields.insert(field, v);
            }
        }
        out.push(r);
    }
    Ok(out)
}

fn read_csv(path: &Path) -> Result<Vec<RawRow>, ReadError> {
    let unreadable = |e: csv::Error| {
        ReadError::Unreadable(match e.position() {
            Some(p) => format!("{} line {}: {e}", path.display(), p.line()),
            None => format!("cannot read {}: {e}", path.display()),
        })
    };
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::Headers)
        .from_path(path)
        .map_err(unreadable)?;
    let columns: Vec<String> = rdr
        .headers()
        .map_err(unreadable)?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_owned())
        .collect();
    let fields = columns_to_fields(&columns, "the header line")?;
    let mut out = Vec::new();
    for record in rdr.records() {
        let record = record.map_err(unreadable)?;
        let line = record.position().map_or(0, |p| p.line());
        let mut r = RawRow {
            at: format!("line {line}"),
            fields: BTreeMap::new(),
            problems: Vec::new(),
        };
        for (value, field) in record.iter().zip(&fields) {
            if let Some(field) = field
                && !value.is_empty()
            {
                r.fields.insert(*field, Value::Text(value.to_owned()));
            }
        }
        out.push(r);
    }
    Ok(out)
}

fn read_json(path: &Path) -> Result<Vec<RawRow>, ReadError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ReadError::Unreadable(format!("cannot read {}: {e}", path.display())))?;
    let doc: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| ReadError::Unreadable(format!("{} is not JSON: {e}", path.display())))?;
    let (items, prefix) = match doc {
        serde_json::Value::Array(a) => (a, "[".to_owned()),
        serde_json::Value::Object(mut o) => match o.remove("users") {
            Some(serde_json::Value::Array(a)) => (a, "users[".to_owned()),
            _ => {
                return Err(ReadError::Unreadable(format!(
                    "{}: expected an array of users or {{\"users\": [...]}}",
                    path.display()
                )));
            }
        },
        _ => {
            return Err(ReadError::Unreadable(format!(
                "{}: expected an array of users or {{\"users\": [...]}}",
                path.display()
            )));
        }
    };
    let mut out = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let mut r = RawRow {
            at: format!("{prefix}{i}]"),
            fields: BTreeMap::new(),
            problems: Vec::new(),
        };
        let serde_json::Value::Object(obj) = item else {
            r.problems.push("is not a JSON object".to_owned());
            out.push(r);
            continue;
        };
        for (key, value) in obj {
            let Some(field) = Field::of_column(&key) else {
                continue;
            };
            if let Some(first) = r.fields.get(&field).map(|_| field.name()) {
                r.problems.push(format!(
                    "key {key:?} repeats the {first} given by another key"
                ));
                continue;
            }
            let v = match value {
                serde_json::Value::Null => None,
                serde_json::Value::String(s) if s.is_empty() => None,
                serde_json::Value::String(s) => Some(Value::Text(s)),
                serde_json::Value::Bool(b) => Some(Value::Bool(b)),
                serde_json::Value::Number(n) => match n.as_i64() {
                    Some(n) => Some(Value::Int(n)),
                    None => Some(Value::Text(n.to_string())),
                },
                serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
                    r.problems
                        .push(format!("key {key:?} holds a list or an object"));
                    None
                }
            };
            if let Some(v) = v {
                r.fields.insert(field, v);
            }
        }
        out.push(r);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_found_case_insensitively_and_by_alias() {
        assert_eq!(Field::of_column("Email"), Some(Field::Email));
        assert_eq!(Field::of_column(" APP-ID "), Some(Field::AppId));
        assert_eq!(Field::of_column("client_secret"), Some(Field::AppSecret));
        assert_eq!(Field::of_column("Is Admin"), Some(Field::Admin));
        assert_eq!(Field::of_column("created_at"), None);
    }

    #[test]
    fn a_missing_or_doubled_column_is_refused_naming_it() {
        let cols = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let err = columns_to_fields(&cols(&["email", "app_id", "id"]), "the users table")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with("the users table has no column for app_secret (or appsecret"),
            "{err}"
        );
        assert!(err.ends_with("columns: email, app_id, id"), "{err}");
        let err = columns_to_fields(&cols(&["email", "app_id", "secret", "client_secret"]), "x")
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            err,
            "columns \"secret\" and \"client_secret\" both hold app_secret"
        );
    }

    #[test]
    fn csv_rows_carry_their_line_numbers_and_empty_cells_are_absent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u.csv");
        std::fs::write(
            &path,
            "\u{feff}Email,App_Name,APP_ID,app_secret,extra\na@example.com,,app-1,s1,x\n\"b@example.com\",\"B, Inc\",app-2,s2,y\n",
        )
        .unwrap();
        assert_eq!(detect(&path).unwrap(), Format::Csv);
        let rows = read(&path, Format::Csv, "users").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].at, "line 2");
        assert!(!rows[0].fields.contains_key(&Field::AppName));
        assert_eq!(rows[1].at, "line 3");
        assert!(rows[1].fields[&Field::AppName] == Value::Text("B, Inc".into()));
    }

    #[test]
    fn a_sqlite_file_is_found_by_its_header_and_a_missing_table_lists_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("platform.data");
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch("CREATE TABLE accounts (email TEXT);")
            .unwrap();
        drop(db);
        assert_eq!(detect(&path).unwrap(), Format::Sqlite);
        let err = read(&path, Format::Sqlite, "users")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("has no table \"users\" (tables: accounts)"),
            "{err}"
        );
    }
}
