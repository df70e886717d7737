//! Where `webui version --check` reads the latest release: `--release-url` (or
//! `WEBUI_RELEASE_URL`, merged by clap) > `release_url` in the config file > none, in
//! which case nothing is ever asked. Pure like `resolve`.

use super::file::FileConfig;

/// The configured release URL, if any (blank counts as none).
pub fn release_url(cli: Option<&str>, file: &FileConfig) -> Option<String> {
    cli.map(str::to_string)
        .or_else(|| file.release_url.clone())
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_beats_file_and_blank_is_none() {
        let f = FileConfig::parse(
            "release_url = \"https://a.example/latest.json\"\n",
            std::path::Path::new("t"),
        )
        .unwrap();
        assert_eq!(
            release_url(None, &f).as_deref(),
            Some("https://a.example/latest.json")
        );
        assert_eq!(
            release_url(Some("http://b/x.json"), &f).as_deref(),
            Some("http://b/x.json")
        );
        assert_eq!(release_url(Some("  "), &f), None);
        assert_eq!(release_url(None, &FileConfig::default()), None);
    }
}
