//! The filter language: parsing and compiling any input must end (no hang),
//! never panic, and either succeed or return INVALID_ARGUMENT.
#![no_main]

use crm::records::Entity;
use crm::sql::list::Plan;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = crm::records::filter::parse(text);
    let meta = crm::proto::Account::kind().meta();
    // Compiles to SQL (binds only) or reports the problem.
    let _ = Plan::new(meta, text, "", "", false);
    let _ = Plan::new(meta, "", text, "", true);
    let _ = Plan::new(meta, "", "", text, false);
});
