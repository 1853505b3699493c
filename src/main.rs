//! The `crm` binary; see [`crm::cli`].

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match crm::cli::run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The error and its causes, one line each: no backtrace for a
            // configuration mistake, whatever RUST_BACKTRACE says.
            eprintln!("crm: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
