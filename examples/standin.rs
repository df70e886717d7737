//! The stand-in upstream as a program, for Docker-layer tests: it is copied
//! into minimal images as a stand-in `open-webui` or `ollama`. Test support
//! only, not product code; see `tests/support/standin.rs` for the endpoints
//! and the environment variables it reads.
//!
//! Invoked as `curl` (the images link /usr/bin/curl to it) it is a minimal
//! `curl [-fsS] [--max-time N] [-w FORMAT] URL` (`-f`: an error status is exit 22;
//! `-w`: `%{http_code}` and `\n`), because the real Open WebUI image ships curl
//! and `webui doctor` uses it from inside the container.

#[path = "../tests/support/standin.rs"]
mod standin;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let called_as_curl = args
        .first()
        .is_some_and(|a| a.rsplit('/').next() == Some("curl"));
    if called_as_curl {
        std::process::exit(curl(&args[1..]).await);
    }
    std::process::exit(standin::main_from_env().await);
}

async fn curl(args: &[String]) -> i32 {
    use std::io::Write;
    let Some(url) = args.iter().rev().find(|a| a.starts_with("http://")) else {
        eprintln!("curl (stand-in): only http:// URLs");
        return 2;
    };
    let fail = args
        .iter()
        .any(|a| a.starts_with('-') && !a.starts_with("--") && a.contains('f'));
    let write_out = args
        .iter()
        .position(|a| a == "-w")
        .and_then(|i| args.get(i + 1));
    match standin::fetch_url(url).await {
        Ok((status, _)) if fail && !(200..300).contains(&status) => {
            eprintln!("curl: (22) The requested URL returned error: {status}");
            22
        }
        Ok((status, body)) => {
            let mut out = std::io::stdout();
            let _ = out.write_all(&body);
            if let Some(w) = write_out {
                let w = w
                    .replace("\\n", "\n")
                    .replace("%{http_code}", &status.to_string());
                let _ = out.write_all(w.as_bytes());
            }
            0
        }
        Err(e) => {
            eprintln!("curl: (7) {e}");
            7
        }
    }
}
