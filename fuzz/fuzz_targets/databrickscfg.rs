//! Any text: parsing never panics; an untouched document prints back byte for byte; editing the
//! DEFAULT profile keeps the file parseable, the edit readable, and every other profile intact.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(mut doc) = databrickscfg::parse(text) else { return };
    assert_eq!(doc.to_string(), text, "round trip");
    let others: Vec<(String, Vec<(String, String)>)> = doc
        .sections()
        .into_iter()
        .filter(|s| *s != "DEFAULT")
        .map(|s| (s.to_string(), doc.entries(s).into_iter().map(|(k, v)| (k.into(), v.into())).collect()))
        .collect();
    doc.set("DEFAULT", "host", "https://x.cloud.databricks.com").unwrap();
    doc.set("DEFAULT", "client_id", "id").unwrap();
    doc.remove("DEFAULT", "token");
    let printed = doc.to_string();
    let again = databrickscfg::parse(&printed).expect("an edited document stays parseable");
    assert_eq!(again.get("DEFAULT", "host"), Some("https://x.cloud.databricks.com"));
    assert_eq!(again.get("DEFAULT", "client_id"), Some("id"));
    assert_eq!(again.get("DEFAULT", "token"), None);
    for (section, entries) in others {
        let now: Vec<(String, String)> = again.entries(&section).into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        assert_eq!(now, entries, "profile [{section}] changed");
    }
});
