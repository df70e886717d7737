//! The stand-in upstream as a program, for Docker-layer tests: it is copied
//! into minimal images as a stand-in `open-webui` or `ollama`. Test support
//! only, not product code; see `tests/support/standin.rs` for the endpoints
//! and the environment variables it reads.

#[path = "../tests/support/standin.rs"]
mod standin;

#[tokio::main]
async fn main() {
    std::process::exit(standin::main_from_env().await);
}
