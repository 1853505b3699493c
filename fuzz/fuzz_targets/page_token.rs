//! Page tokens: decoding any input must never panic, and nothing but a token
//! this key made for this binding may decode.
#![no_main]

use crm::records::page::{Cursor, PageKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = PageKey::new(b"fuzz key");
    let binding = ["tenant", "", "accounts", "", "", "", "0"];
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cursor) = key.decode(&binding, text) {
            // Only a token we made decodes, and it re-encodes identically.
            assert_eq!(key.encode(&binding, &cursor), text);
        }
    }
    // Round trip of arbitrary keys.
    let keys: Vec<Option<String>> = data
        .split(|b| *b == 0)
        .map(|part| std::str::from_utf8(part).ok().map(str::to_owned))
        .collect();
    let cursor = Cursor { keys };
    let token = key.encode(&binding, &cursor);
    if token.len() <= crm::records::page::MAX_TOKEN_LEN {
        assert_eq!(key.decode(&binding, &token).unwrap(), cursor);
    }
    assert!(key.decode(&["other", "", "accounts", "", "", "", "0"], &token).is_err());
});
