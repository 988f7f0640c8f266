//! Environment overrides: `STAMPEDE_<SECTION>_<KEY>` variables, typed like the key's default
//! value, applied to the TOML before it is read.

use super::{ConfigError, DEFAULT_TOML};

/// Applies `STAMPEDE_<SECTION>_<KEY>` variables to `table`, typed like the default value.
/// `STAMPEDE_<WORD>_…` variables that are not settings: the log filter, and those of the test,
/// benchmark and component scripts (which pass their environment on to the service).
const NOT_CONFIG: [&str; 8] = [
    "log",
    // STAMPEDE_SMTP_USER and STAMPEDE_SMTP_PASSWORD: the mail server's credentials, kept out of
    // config files.
    "smtp",
    "test",
    "bench",
    "components",
    "tansu",
    "fuzz",
    "screenshot",
];

pub(super) fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let defaults: toml::Table = DEFAULT_TOML.parse().unwrap_or_default();
    // Every table, nested ones too ([alerts.smtp] is ALERTS_SMTP), as its variable prefix and
    // its path.
    let mut sections: Vec<(String, Vec<String>, &toml::Table)> = Vec::new();
    for (name, value) in &defaults {
        if let Some(t) = value.as_table() {
            sections.push((name.clone(), vec![name.clone()], t));
            for (inner, v) in t {
                if let Some(nested) = v.as_table() {
                    sections.push((
                        format!("{name}_{inner}"),
                        vec![name.clone(), inner.clone()],
                        nested,
                    ));
                }
            }
        }
    }
    // Longest first, so that SUMMARY_STREAM wins over a shorter prefix.
    sections.sort_by_key(|(prefix, _, _)| std::cmp::Reverse(prefix.len()));
    for (var, value) in env {
        let Some(rest) = var.strip_prefix("STAMPEDE_") else {
            continue;
        };
        let lower = rest.to_ascii_lowercase();
        let found = sections.iter().find_map(|(prefix, path, table)| {
            let key = lower.strip_prefix(prefix.as_str())?.strip_prefix('_')?;
            let default = table.get(key).filter(|v| !v.is_table())?;
            Some((path.clone(), key.to_owned(), default))
        });
        let Some((path, key, default)) = found else {
            // Every other STAMPEDE_ variable names a setting, so a typo or a section this build
            // does not have (STAMPEDE_ARCHIVE_KIND) is refused rather than silently ignored.
            let word = lower.split('_').next().unwrap_or("");
            if NOT_CONFIG.contains(&word) {
                continue;
            }
            let message = if sections
                .iter()
                .any(|(s, _, _)| lower.starts_with(s.as_str()))
            {
                "names no configuration key (see stampede print-config)".to_owned()
            } else {
                format!(
                    "names no configuration section: [{word}] is not one (see stampede print-config)"
                )
            };
            return Err(ConfigError::Env { var, message });
        };
        let typed = match default {
            toml::Value::Integer(_) => value
                .trim()
                .parse::<i64>()
                .map(toml::Value::Integer)
                .map_err(|_| "expected a whole number"),
            toml::Value::Boolean(_) => value
                .trim()
                .parse::<bool>()
                .map(toml::Value::Boolean)
                .map_err(|_| "expected true or false"),
            toml::Value::Float(_) => value
                .trim()
                .parse::<f64>()
                .map(toml::Value::Float)
                .map_err(|_| "expected a number"),
            // A list: comma-separated, e.g. STAMPEDE_WEB_ALLOWED_HOSTS=stampede.lan,10.0.0.5.
            toml::Value::Array(_) => Ok(toml::Value::Array(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(|v| toml::Value::String(v.to_owned()))
                    .collect(),
            )),
            _ => Ok(toml::Value::String(value.clone())),
        }
        .map_err(|m| ConfigError::Env {
            var: var.clone(),
            message: format!("{m}, got {value:?}"),
        })?;
        let mut at = &mut *table;
        for part in path {
            let entry = at
                .entry(part)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry.as_table_mut() {
                Some(t) => at = t,
                None => return Ok(()),
            }
        }
        at.insert(key, typed);
    }
    Ok(())
}
