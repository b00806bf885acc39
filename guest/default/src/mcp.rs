//! Databricks' managed MCP servers (`DEVBOX_MCP`), registered with every configured assistant
//! that speaks remote (streamable HTTP) MCP: Claude Code, Codex, Gemini CLI and OpenCode.
//!
//! Claude Code and Codex run a headers helper (`devbox-auth token --http-headers`) for each
//! connection, so no credential sits in their files and they go straight to the workspace.
//! Gemini CLI and OpenCode take static headers only: they get what a client that reads its key
//! once gets (the credential relay's URL and key under `watch`, else the workspace and the token).
//!
//! Ours are the entries named `databricks-…` whose URL has `/api/2.0/mcp/`: replaced on every
//! run, removed when `DEVBOX_MCP` no longer names them; every other server is the user's and stays.

use serde_json::{Map, Value, json};

pub const MCP_VAR: &str = "DEVBOX_MCP";
const NAME_PREFIX: &str = "databricks-";
const PATH_PREFIX: &str = "/api/2.0/mcp/";

/// One managed MCP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// The name clients list it under (`databricks-functions-main-tools`).
    pub name: String,
    /// Its path on the workspace (`/api/2.0/mcp/functions/main/tools`).
    pub path: String,
}

/// `DEVBOX_MCP`: entries separated by commas or spaces, each `functions:<catalog>.<schema>`,
/// `vector-search:<catalog>.<schema>`, `genie:<space-id>` or `sql`. Unset or empty: none.
pub fn parse(raw: Option<&str>) -> Result<Vec<Server>, String> {
    let mut servers: Vec<Server> = Vec::new();
    for entry in raw.unwrap_or_default().split([',', ' ', '\t', '\n']).filter(|e| !e.is_empty()) {
        let server = parse_entry(entry).map_err(|why| {
            format!(
                "{MCP_VAR} entry {entry:?} {why}; use a comma-separated list of functions:<catalog>.<schema>, vector-search:<catalog>.<schema>, genie:<space-id> and sql"
            )
        })?;
        if !servers.contains(&server) {
            servers.push(server);
        }
    }
    Ok(servers)
}

fn parse_entry(entry: &str) -> Result<Server, String> {
    let (kind, target) = match entry.split_once(':') {
        Some((kind, target)) => (kind, Some(target)),
        None => (entry, None),
    };
    let name_ok = |part: &str| {
        !part.is_empty()
            && part.len() <= 255
            && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    let catalog_schema = |target: Option<&str>| -> Result<(String, String), String> {
        let target = target.ok_or("names no <catalog>.<schema>")?;
        match target.split_once('.') {
            Some((c, s)) if name_ok(c) && name_ok(s) => Ok((c.to_string(), s.to_string())),
            _ => Err("needs <catalog>.<schema>, each made of letters, digits, _ and -".into()),
        }
    };
    match kind {
        "sql" if target.is_none() => {
            Ok(Server { name: format!("{NAME_PREFIX}sql"), path: format!("{PATH_PREFIX}sql") })
        }
        "sql" => Err("takes no argument".into()),
        "genie" => match target {
            Some(id) if name_ok(id) => {
                Ok(Server { name: format!("{NAME_PREFIX}genie-{id}"), path: format!("{PATH_PREFIX}genie/{id}") })
            }
            _ => Err("needs genie:<space-id> (letters, digits, _ and -)".into()),
        },
        "functions" | "vector-search" => {
            let (catalog, schema) = catalog_schema(target)?;
            Ok(Server {
                name: format!("{NAME_PREFIX}{kind}-{catalog}-{schema}"),
                path: format!("{PATH_PREFIX}{kind}/{catalog}/{schema}"),
            })
        }
        _ => Err("is not a kind of managed MCP server".into()),
    }
}

/// Whether a client's server entry is one of ours (by its name and the URL it points at).
fn is_ours(name: &str, url: Option<&str>) -> bool {
    name.starts_with(NAME_PREFIX) && url.is_some_and(|u| u.contains(PATH_PREFIX))
}

/// How a client reaches and authenticates to the servers.
pub enum Access<'a> {
    /// A command that prints `{"Authorization": ...}`, per connection; to the workspace.
    Helper { workspace_url: &'a str, command: &'a str },
    /// A static bearer (a secret reference) for `base_url` (the relay, or the workspace).
    Bearer { base_url: &'a str, key_ref: &'a str },
}

impl Access<'_> {
    fn url(&self, server: &Server) -> String {
        match self {
            Access::Helper { workspace_url, .. } => format!("{workspace_url}{}", server.path),
            Access::Bearer { base_url, .. } => format!("{base_url}{}", server.path),
        }
    }
}

/// Merge ours into a JSON map of servers (`mcpServers`, OpenCode's `mcp`), each rendered by `entry`.
fn merge_json(servers: &mut Map<String, Value>, ours: &[Server], url_key: &str, entry: impl Fn(&Server) -> Value) {
    servers.retain(|name, value| !is_ours(name, value.get(url_key).and_then(Value::as_str)));
    for server in ours {
        servers.insert(server.name.clone(), entry(server));
    }
}

fn servers_object<'m>(config: &'m mut Map<String, Value>, key: &str) -> &'m mut Map<String, Value> {
    let slot = config.entry(key).or_insert_with(|| json!({}));
    if !slot.is_object() {
        *slot = json!({});
    }
    slot.as_object_mut().expect("just made an object")
}

/// Claude Code (`~/.claude.json`, `mcpServers`): remote HTTP with a `headersHelper`.
pub fn claude(state: &mut Map<String, Value>, ours: &[Server], access: &Access) {
    if ours.is_empty() && !state.contains_key("mcpServers") {
        return;
    }
    let helper = match access {
        Access::Helper { command, .. } => Some(*command),
        Access::Bearer { .. } => None,
    };
    merge_json(servers_object(state, "mcpServers"), ours, "url", |server| {
        let mut entry = json!({ "type": "http", "url": access.url(server) });
        match (helper, access) {
            (Some(command), _) => entry["headersHelper"] = json!(command),
            (None, Access::Bearer { key_ref, .. }) => {
                entry["headers"] = json!({ "Authorization": format!("Bearer {key_ref}") })
            }
            _ => {}
        }
        entry
    });
}

/// Gemini CLI (`~/.gemini/settings.json`, `mcpServers`): streamable HTTP (`httpUrl`) with headers.
pub fn gemini(settings: &mut Map<String, Value>, ours: &[Server], access: &Access) {
    if ours.is_empty() && !settings.contains_key("mcpServers") {
        return;
    }
    merge_json(
        servers_object(settings, "mcpServers"),
        ours,
        "httpUrl",
        |server| json!({ "httpUrl": access.url(server), "headers": bearer_headers(access) }),
    );
}

/// OpenCode (`opencode.json`, `mcp`): a remote server with headers.
pub fn opencode(config: &mut Map<String, Value>, ours: &[Server], access: &Access) {
    if ours.is_empty() && !config.contains_key("mcp") {
        return;
    }
    merge_json(
        servers_object(config, "mcp"),
        ours,
        "url",
        |server| json!({ "type": "remote", "url": access.url(server), "enabled": true, "headers": bearer_headers(access) }),
    );
}

fn bearer_headers(access: &Access) -> Value {
    match access {
        Access::Bearer { key_ref, .. } => json!({ "Authorization": format!("Bearer {key_ref}") }),
        Access::Helper { .. } => json!({}),
    }
}

/// Codex (`config.toml`, `[mcp_servers.<name>]`): `url` and `http_headers_helper`.
pub fn codex(doc: &mut toml_edit::DocumentMut, ours: &[Server], access: &Access) -> Result<(), String> {
    use toml_edit::{Item, Table, value};
    if ours.is_empty() && !doc.contains_key("mcp_servers") {
        return Ok(());
    }
    if !doc.contains_table("mcp_servers") {
        let mut servers = Table::new();
        servers.set_implicit(true);
        doc["mcp_servers"] = Item::Table(servers);
    }
    let servers = doc["mcp_servers"].as_table_mut().ok_or("`mcp_servers` is not a table")?;
    let stale: Vec<String> = servers
        .iter()
        .filter(|(name, item)| is_ours(name, item.get("url").and_then(|u| u.as_str())))
        .map(|(name, _)| name.to_string())
        .collect();
    for name in stale {
        servers.remove(&name);
    }
    for server in ours {
        let mut entry = Table::new();
        entry["url"] = value(access.url(server));
        match access {
            Access::Helper { command, .. } => entry["http_headers_helper"] = value(*command),
            Access::Bearer { key_ref, .. } => {
                let mut headers = toml_edit::InlineTable::new();
                headers.insert("Authorization", format!("Bearer {key_ref}").into());
                entry["http_headers"] = value(headers);
            }
        }
        servers[server.name.as_str()] = Item::Table(entry);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_and_bad_entries_say_what_to_write() {
        let servers = parse(Some("functions:main.tools, vector-search:main.docs genie:01ef sql,sql")).unwrap();
        let paths: Vec<&str> = servers.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/api/2.0/mcp/functions/main/tools",
                "/api/2.0/mcp/vector-search/main/docs",
                "/api/2.0/mcp/genie/01ef",
                "/api/2.0/mcp/sql"
            ]
        );
        assert_eq!(servers[0].name, "databricks-functions-main-tools");
        assert!(parse(None).unwrap().is_empty());
        for bad in [
            "functions",
            "functions:main",
            "functions:main.",
            "genie:",
            "sql:x",
            "genie:../x",
            "search:a.b",
            "functions:a/b.c",
        ] {
            let error = parse(Some(bad)).unwrap_err();
            assert!(error.starts_with(&format!("DEVBOX_MCP entry {bad:?}")), "{error}");
            assert!(error.contains("functions:<catalog>.<schema>"), "{error}");
        }
    }

    #[test]
    fn ours_are_replaced_and_removed_and_the_users_stay() {
        let mut state = serde_json::from_value::<Map<String, Value>>(json!({
            "mcpServers": {
                "mine": { "type": "http", "url": "https://example.com/mcp" },
                "databricks-sql": { "type": "http", "url": "https://old/api/2.0/mcp/sql" },
                "databricks-mine": { "type": "stdio", "command": "x" }
            }
        }))
        .unwrap();
        let ours = parse(Some("genie:abc")).unwrap();
        let access = Access::Helper { workspace_url: "https://w", command: "devbox-auth token --http-headers" };
        claude(&mut state, &ours, &access);
        let servers = state["mcpServers"].as_object().unwrap();
        let names: Vec<&String> = servers.keys().collect();
        assert_eq!(names, ["mine", "databricks-mine", "databricks-genie-abc"]);
        assert_eq!(servers["databricks-genie-abc"]["url"], "https://w/api/2.0/mcp/genie/abc");
        assert_eq!(servers["databricks-genie-abc"]["headersHelper"], "devbox-auth token --http-headers");

        let mut doc: toml_edit::DocumentMut =
            "[mcp_servers.mine]\nurl = \"https://example.com\"\n\n[mcp_servers.databricks-sql]\nurl = \"https://w/api/2.0/mcp/sql\"\n"
                .parse()
                .unwrap();
        codex(&mut doc, &ours, &Access::Bearer { base_url: "http://127.0.0.1:1", key_ref: "REF" }).unwrap();
        let text = doc.to_string();
        assert!(text.contains("[mcp_servers.mine]") && !text.contains("databricks-sql"), "{text}");
        assert!(text.contains("url = \"http://127.0.0.1:1/api/2.0/mcp/genie/abc\""), "{text}");
        assert!(text.contains("Authorization = \"Bearer REF\""), "{text}");

        // No servers wanted and none there: the file gains no empty table.
        let mut untouched = Map::new();
        gemini(&mut untouched, &[], &access);
        opencode(&mut untouched, &[], &access);
        assert!(untouched.is_empty());
    }
}
