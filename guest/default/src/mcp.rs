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

use crate::assistants::object;

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
        match servers.iter().find(|s| s.name == server.name) {
            Some(same) if *same == server => {}
            Some(same) => {
                return Err(format!(
                    "{MCP_VAR} names two servers that would both be called {:?} ({} and {}); leave one out",
                    server.name, same.path, server.path
                ));
            }
            None => servers.push(server),
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

/// How a client reaches and authenticates to the servers.
pub struct Access<'a> {
    /// The workspace: an entry pointing at its MCP servers (or the relay's) may be ours.
    pub workspace_url: &'a str,
    pub via: Via<'a>,
}

pub enum Via<'a> {
    /// A command that prints `{"Authorization": ...}` per connection; straight to the workspace.
    Helper(&'a str),
    /// A static bearer (a secret reference) for `base_url` (the relay, or the workspace).
    Bearer { base_url: &'a str, key_ref: &'a str },
}

impl Access<'_> {
    fn url(&self, server: &Server) -> String {
        match self.via {
            Via::Helper(_) => format!("{}{}", self.workspace_url, server.path),
            Via::Bearer { base_url, .. } => format!("{base_url}{}", server.path),
        }
    }

    fn bearer(&self) -> Option<String> {
        match self.via {
            Via::Helper(_) => None,
            Via::Bearer { key_ref, .. } => Some(format!("Bearer {key_ref}")),
        }
    }

    /// Whether an entry is one we wrote: our name prefix, a URL at this workspace's (or a
    /// relay's) managed MCP servers, and our credential (the helper, or a bearer header).
    fn is_ours(&self, name: &str, url: Option<&str>, helper: Option<&str>, authorization: Option<&str>) -> bool {
        let at_ours = url.is_some_and(|url| {
            url.starts_with(&format!("{}{PATH_PREFIX}", self.workspace_url))
                || (url.starts_with("http://127.0.0.1:") && url.contains(PATH_PREFIX))
        });
        let our_credential = helper.is_some_and(|h| h.contains(" token --home ") && h.ends_with(" --http-headers"))
            || authorization.is_some_and(|a| a.starts_with("Bearer "));
        name.starts_with(NAME_PREFIX) && at_ours && our_credential
    }
}

/// Where a client's server entries live in its JSON config, and how one of ours is written.
struct JsonClient<'c> {
    /// The client's file, for warnings.
    file: &'c str,
    /// `mcpServers`, or OpenCode's `mcp`.
    key: &'c str,
    url_key: &'c str,
    /// Sets our keys on an entry (new, or ours from an earlier run: the user's other keys stay).
    set: &'c dyn Fn(&mut Map<String, Value>, &Server),
}

/// Merge ours into a client's JSON config; the warnings say what was left alone and why.
fn merge_json(config: &mut Map<String, Value>, ours: &[Server], access: &Access, client: JsonClient) -> Vec<String> {
    let entry_is_ours = |name: &str, entry: &Value| {
        let text = |key: &str| entry.get(key).and_then(Value::as_str);
        let authorization = entry.get("headers").and_then(|h| h.get("Authorization")).and_then(Value::as_str);
        access.is_ours(name, text(client.url_key), text("headersHelper"), authorization)
    };
    let slot = match config.get_mut(client.key) {
        Some(slot) => slot,
        None if ours.is_empty() => return Vec::new(),
        None => config.entry(client.key).or_insert_with(|| Value::Object(Map::new())),
    };
    let Some(servers) = slot.as_object_mut() else {
        return match ours.is_empty() {
            true => Vec::new(),
            false => vec![format!(
                "`{}` in ~/{} is not an object: left as it is, and the MCP servers are not registered there",
                client.key, client.file
            )],
        };
    };
    servers.retain(|name, entry| !entry_is_ours(name, entry) || ours.iter().any(|s| s.name == *name));
    let mut warnings = Vec::new();
    for server in ours {
        match servers.get_mut(&server.name) {
            Some(entry) if entry_is_ours(&server.name, entry) => {
                (client.set)(entry.as_object_mut().expect("ours is an object"), server)
            }
            Some(_) => {
                warnings.push(format!("`{}` in ~/{} is not devbox-auth's: left as it is", server.name, client.file))
            }
            None => {
                let mut entry = Map::new();
                (client.set)(&mut entry, server);
                servers.insert(server.name.clone(), Value::Object(entry));
            }
        }
    }
    warnings
}

/// Claude Code (`~/.claude.json`, `mcpServers`): remote HTTP with a `headersHelper`.
pub fn claude(state: &mut Map<String, Value>, ours: &[Server], access: &Access) -> Vec<String> {
    let set = |entry: &mut Map<String, Value>, server: &Server| {
        entry.insert("type".into(), json!("http"));
        entry.insert("url".into(), json!(access.url(server)));
        match (&access.via, access.bearer()) {
            (Via::Helper(command), _) => {
                entry.insert("headersHelper".into(), json!(command));
            }
            (_, Some(bearer)) => {
                object(entry, "headers").insert("Authorization".into(), json!(bearer));
            }
            _ => {}
        }
    };
    merge_json(state, ours, access, JsonClient { file: ".claude.json", key: "mcpServers", url_key: "url", set: &set })
}

/// Gemini CLI (`~/.gemini/settings.json`, `mcpServers`): streamable HTTP (`httpUrl`) with headers.
pub fn gemini(settings: &mut Map<String, Value>, ours: &[Server], access: &Access) -> Vec<String> {
    let set = |entry: &mut Map<String, Value>, server: &Server| {
        entry.insert("httpUrl".into(), json!(access.url(server)));
        if let Some(bearer) = access.bearer() {
            object(entry, "headers").insert("Authorization".into(), json!(bearer));
        }
    };
    let client = JsonClient { file: ".gemini/settings.json", key: "mcpServers", url_key: "httpUrl", set: &set };
    merge_json(settings, ours, access, client)
}

/// OpenCode (`opencode.json`, `mcp`): a remote server with headers (enabled when new; a user's
/// `enabled: false` stays).
pub fn opencode(config: &mut Map<String, Value>, ours: &[Server], access: &Access) -> Vec<String> {
    let set = |entry: &mut Map<String, Value>, server: &Server| {
        entry.insert("type".into(), json!("remote"));
        entry.insert("url".into(), json!(access.url(server)));
        entry.entry("enabled").or_insert(json!(true));
        if let Some(bearer) = access.bearer() {
            object(entry, "headers").insert("Authorization".into(), json!(bearer));
        }
    };
    let client = JsonClient { file: ".config/opencode/opencode.json", key: "mcp", url_key: "url", set: &set };
    merge_json(config, ours, access, client)
}

/// Codex (`config.toml`, `[mcp_servers.<name>]`): `url` and `http_headers_helper` (or
/// `http_headers`); a user's other keys on our entries (approval modes, timeouts) stay.
pub fn codex(doc: &mut toml_edit::DocumentMut, ours: &[Server], access: &Access) -> Vec<String> {
    use toml_edit::{Item, Table, TableLike, value};
    let entry_is_ours = |name: &str, entry: &Item| {
        let text = |key: &str| entry.get(key).and_then(Item::as_str);
        let authorization = entry.get("http_headers").and_then(|h| h.get("Authorization")).and_then(Item::as_str);
        access.is_ours(name, text("url"), text("http_headers_helper"), authorization)
    };
    let set = |entry: &mut dyn TableLike, server: &Server| {
        entry.insert("url", value(access.url(server)));
        match (&access.via, access.bearer()) {
            (Via::Helper(command), _) => {
                entry.insert("http_headers_helper", value(*command));
            }
            (_, Some(bearer)) => {
                let mut headers = toml_edit::InlineTable::new();
                headers.insert("Authorization", bearer.into());
                entry.insert("http_headers", value(headers));
            }
            _ => {}
        }
    };
    if !doc.contains_key("mcp_servers") {
        if ours.is_empty() {
            return Vec::new();
        }
        let mut servers = Table::new();
        servers.set_implicit(true);
        doc["mcp_servers"] = Item::Table(servers);
    }
    let Some(servers) = doc["mcp_servers"].as_table_like_mut() else {
        return match ours.is_empty() {
            true => Vec::new(),
            false => vec!["`mcp_servers` in ~/.codex/config.toml is not a table: left as it is, and the MCP servers are not registered there".into()],
        };
    };
    let stale: Vec<String> = servers
        .iter()
        .filter(|(name, entry)| entry_is_ours(name, entry) && !ours.iter().any(|s| s.name == *name))
        .map(|(name, _)| name.to_string())
        .collect();
    for name in stale {
        servers.remove(&name);
    }
    let mut warnings = Vec::new();
    for server in ours {
        match servers.get_mut(&server.name) {
            Some(entry) if entry_is_ours(&server.name, entry) => {
                if let Some(entry) = entry.as_table_like_mut() {
                    set(entry, server);
                }
            }
            Some(_) => {
                warnings.push(format!("`{}` in ~/.codex/config.toml is not devbox-auth's: left as it is", server.name))
            }
            None => {
                let mut entry = Table::new();
                set(&mut entry, server);
                servers.insert(&server.name, Item::Table(entry));
            }
        }
    }
    warnings
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

    fn helper() -> Access<'static> {
        Access { workspace_url: "https://w", via: Via::Helper("/b/devbox-auth token --home /h --http-headers") }
    }

    #[test]
    fn ours_are_updated_and_removed_and_the_users_stay() {
        let mut state = serde_json::from_value::<Map<String, Value>>(json!({
            "mcpServers": {
                "mine": { "type": "http", "url": "https://example.com/mcp" },
                // Ours from an earlier run, with the user's own timeout on it.
                "databricks-sql": { "type": "http", "url": "https://w/api/2.0/mcp/sql", "headersHelper": "/b/devbox-auth token --home /h --http-headers", "timeout": 5 },
                "databricks-genie-abc": { "type": "http", "url": "https://w/api/2.0/mcp/genie/abc", "headersHelper": "/old/devbox-auth token --home /h --http-headers", "timeout": 9 },
                // The user's, though named like ours: another workspace, their own credential.
                "databricks-functions-a-b": { "type": "http", "url": "https://other/api/2.0/mcp/functions/a/b" },
                "databricks-mine": { "type": "stdio", "command": "x" }
            }
        }))
        .unwrap();
        let ours = parse(Some("genie:abc,functions:a.b")).unwrap();
        let warnings = claude(&mut state, &ours, &helper());
        assert_eq!(warnings, ["`databricks-functions-a-b` in ~/.claude.json is not devbox-auth's: left as it is"]);
        let servers = state["mcpServers"].as_object().unwrap();
        let names: Vec<&String> = servers.keys().collect();
        assert_eq!(
            names,
            ["mine", "databricks-genie-abc", "databricks-functions-a-b", "databricks-mine"],
            "sql is gone"
        );
        assert_eq!(servers["databricks-genie-abc"]["headersHelper"], "/b/devbox-auth token --home /h --http-headers");
        assert_eq!(servers["databricks-genie-abc"]["timeout"], 9, "the user's key on our entry stays");
        assert_eq!(servers["databricks-functions-a-b"]["url"], "https://other/api/2.0/mcp/functions/a/b");

        // Codex: an inline table of the user's stays whole; our entry keeps the user's approval mode.
        let mut doc: toml_edit::DocumentMut = "mcp_servers = { mine = { url = \"https://example.com\" }, databricks-sql = { url = \"https://w/api/2.0/mcp/sql\", http_headers_helper = \"/b/devbox-auth token --home /h --http-headers\", default_tools_approval_mode = \"approve\" } }\n"
            .parse()
            .unwrap();
        let relay =
            Access { workspace_url: "https://w", via: Via::Bearer { base_url: "http://127.0.0.1:1", key_ref: "REF" } };
        assert!(codex(&mut doc, &parse(Some("sql")).unwrap(), &helper()).is_empty());
        let text = doc.to_string();
        assert!(text.contains("mine = { url = \"https://example.com\" }"), "{text}");
        assert!(text.contains("default_tools_approval_mode = \"approve\""), "{text}");
        assert!(codex(&mut doc, &[], &relay).is_empty());
        let text = doc.to_string();
        assert!(text.contains("mine") && !text.contains("databricks-sql"), "{text}");
        let mut doc: toml_edit::DocumentMut = "model = \"x\"\n".parse().unwrap();
        codex(&mut doc, &ours, &relay);
        let text = doc.to_string();
        assert!(text.contains("url = \"http://127.0.0.1:1/api/2.0/mcp/genie/abc\""), "{text}");
        assert!(text.contains("Authorization = \"Bearer REF\""), "{text}");

        // No servers wanted and none there: the file gains nothing; a value that is not an
        // object is left alone (and said so when servers are wanted).
        let mut untouched = Map::new();
        gemini(&mut untouched, &[], &relay);
        opencode(&mut untouched, &[], &relay);
        assert!(untouched.is_empty());
        let mut odd = serde_json::from_value::<Map<String, Value>>(json!({ "mcp": "off" })).unwrap();
        assert_eq!(opencode(&mut odd, &ours, &relay).len(), 1);
        assert_eq!(odd["mcp"], "off");
    }

    #[test]
    fn two_entries_with_one_name_are_refused() {
        let error = parse(Some("functions:a-b.c,functions:a.b-c")).unwrap_err();
        assert!(error.contains("both be called \"databricks-functions-a-b-c\""), "{error}");
    }
}
