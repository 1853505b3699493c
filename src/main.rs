//! The `crm` binary; see [`crm::cli`].

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    crm::cli::run().await
}
