//! URL checks and normalisation for the Reddit link filter.
//!
//! WebText kept outbound links; OpenWebText (jcpeterson/openwebtext `url_utils.py`) dropped
//! image/video hosts, Reddit itself, social sites, Wikipedia and ~70 non-document file
//! extensions. Our lists follow theirs, extended with a few hosts that appeared since. Their
//! dedup compared URLs almost verbatim; ours normalises first (see [`normalize`]), so
//! `http://www.cnn.com/x/` and `https://cnn.com/x` count as one document.

/// Domains whose links are never documents (or, for Wikipedia, are removed on purpose: the
/// GPT-2 paper removed Wikipedia from WebText to avoid overlap with evaluation sets).
/// A host is blocked when it equals one of these or ends with `.` + one of these.
pub const DEFAULT_BLOCKED_DOMAINS: &[&str] = &[
    // Wikipedia and sister projects (every language subdomain matches by suffix).
    "wikipedia.org",
    "wikimedia.org",
    "wikidata.org",
    // Reddit itself: self posts, comments, its media hosts.
    "reddit.com",
    "redd.it",
    "redditmedia.com",
    "reddituploads.com",
    // Image hosts.
    "imgur.com",
    "gfycat.com",
    "giphy.com",
    "flickr.com",
    "flic.kr",
    "imgflip.com",
    "gyazo.com",
    "twimg.com",
    "instagram.com",
    "pinterest.com",
    "deviantart.com",
    "photobucket.com",
    "tinypic.com",
    // Video and audio hosts.
    "youtube.com",
    "youtu.be",
    "vimeo.com",
    "dailymotion.com",
    "liveleak.com",
    "twitch.tv",
    "streamable.com",
    "soundcloud.com",
    "bandcamp.com",
    "spotify.com",
    // Social sites and other pages that are not scraper friendly.
    "twitter.com",
    "x.com",
    "facebook.com",
    "fb.com",
    "tiktok.com",
    "linkedin.com",
    "google.com",
    "github.com",
    "discord.gg",
    "ebay.com",
    "amazon.com",
    "pornhub.com",
];

/// Path extensions of files that are not HTML documents.
pub const DEFAULT_BLOCKED_EXTENSIONS: &[&str] = &[
    // images
    ".png", ".jpg", ".jpeg", ".gif", ".gifv", ".bmp", ".tif", ".tiff", ".webp", ".svg", ".ico",
    ".psd", ".ai", // video
    ".mp4", ".m4v", ".webm", ".mkv", ".avi", ".mov", ".wmv", ".flv", ".mpg", ".mpeg", ".3gp",
    ".ogv", ".qt", ".swf", // audio
    ".mp3", ".wav", ".ogg", ".flac", ".m4a", ".aac", ".wma", ".mid", ".midi", ".aif", ".ram",
    // office documents and data
    ".pdf", ".doc", ".docx", ".ppt", ".pptx", ".pps", ".xls", ".xlsx", ".odt", ".csv", ".log",
    ".dat", ".txt", ".xml", ".json", ".sql", // binaries, packages, archives
    ".iso", ".bin", ".exe", ".msi", ".apk", ".app", ".dmg", ".pkg", ".deb", ".rpm", ".jar", ".zip",
    ".rar", ".7z", ".tar", ".gz", ".tgz", ".bz2", ".xz", // web assets and code
    ".css", ".js", ".py", ".otf", ".ttf", ".woff", ".woff2", ".torrent",
];

/// The parts of an absolute http(s) URL, split by RFC 3986's generic syntax (no IDNA, no
/// path resolution: we compare what people posted, not what a browser would fetch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlParts<'a> {
    /// Lowercased host without a trailing dot.
    pub host: String,
    /// Port if given and not the scheme's default.
    pub port: Option<&'a str>,
    pub path: &'a str,
    pub query: Option<&'a str>,
}

/// Split an absolute `http`/`https` URL; `None` if it is not one or has no host.
pub fn parse(url: &str) -> Option<UrlParts<'_>> {
    let (scheme, rest) = url.split_once(':')?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let rest = rest.strip_prefix("//")?;
    // The fragment goes first: a '#' ends everything, even inside what looks like a query.
    let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
    let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(auth_end);
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (tail, None),
    };
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match hostport.rsplit_once(':') {
        // An IPv6 literal keeps its colons; a port follows the closing bracket.
        Some((h, p)) if !p.contains(']') => (h, Some(p)),
        _ => (hostport, None),
    };
    // A port must be a number that fits in 16 bits; 80 and 443 are dropped whatever the scheme
    // (a page served on https's port through http is still the same page to a scraper).
    let port = match port.filter(|p| !p.is_empty()) {
        Some(p)
            if !p.bytes().all(|b| b.is_ascii_digit())
                || p.parse::<u32>().map_or(true, |n| n > 65535) =>
        {
            return None
        }
        Some("80") | Some("443") => None,
        other => other,
    };
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let bad_char = |c: char| c.is_whitespace() || c.is_control() || "<>\"`{}|\\^%".contains(c);
    if host.is_empty() || host.chars().any(bad_char) {
        return None;
    }
    Some(UrlParts {
        host,
        port,
        path,
        query,
    })
}

/// True if `host` is one of `domains` or a subdomain of one.
pub fn host_blocked(host: &str, domains: &[String]) -> bool {
    domains.iter().any(|d| {
        host == d
            || (host.len() > d.len()
                && host.ends_with(d.as_str())
                && host.as_bytes()[host.len() - d.len() - 1] == b'.')
    })
}

/// True if the path (query and fragment excluded) ends with a blocked extension.
pub fn extension_blocked(path: &str, extensions: &[String]) -> bool {
    let path = path.to_ascii_lowercase();
    extensions.iter().any(|e| path.ends_with(e.as_str()))
}

/// The normalised form used for deduplication: scheme dropped, host lowercased without a leading
/// `www.`, default port, userinfo and fragment dropped, unreserved percent-escapes decoded and the
/// others uppercased, one trailing `/` removed, the query kept verbatim.
/// `HTTP://www.CNN.com:80/a%7Eb/?x=1#frag` → `cnn.com/a~b?x=1`.
pub fn normalize(parts: &UrlParts<'_>) -> String {
    let host = parts.host.strip_prefix("www.").unwrap_or(&parts.host);
    let mut out = String::with_capacity(host.len() + parts.path.len() + 16);
    out.push_str(host);
    if let Some(port) = parts.port {
        out.push(':');
        out.push_str(port);
    }
    let path = normalize_escapes(parts.path);
    let path = path.strip_suffix('/').unwrap_or(&path);
    out.push_str(path);
    if let Some(q) = parts.query.filter(|q| !q.is_empty()) {
        out.push('?');
        out.push_str(q);
    }
    out
}

fn normalize_escapes(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit()
        {
            let v = (hex_val(b[i + 1]) << 4) | hex_val(b[i + 2]);
            if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                out.push(v as char);
            } else {
                out.push('%');
                out.push(b[i + 1].to_ascii_uppercase() as char);
                out.push(b[i + 2].to_ascii_uppercase() as char);
            }
            i += 3;
        } else {
            // Copy one whole UTF-8 character.
            let ch_len = path[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&path[i..i + ch_len]);
            i += ch_len;
        }
    }
    out
}

fn hex_val(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(u: &str) -> String {
        normalize(&parse(u).expect("parses"))
    }

    #[test]
    fn normalises_the_documented_example() {
        assert_eq!(
            norm("HTTP://www.CNN.com:80/a%7Eb/?x=1#frag"),
            "cnn.com/a~b?x=1"
        );
    }

    #[test]
    fn scheme_www_slash_and_fragment_do_not_split_documents() {
        let a = norm("http://www.example.com/story/");
        for u in [
            "https://example.com/story",
            "http://example.com/story#comments",
            "https://WWW.Example.COM/story/",
        ] {
            assert_eq!(norm(u), a, "{u}");
        }
        assert_eq!(norm("http://example.com/"), "example.com");
        assert_eq!(norm("http://example.com"), "example.com");
    }

    #[test]
    fn keeps_what_distinguishes_documents() {
        assert_ne!(
            norm("http://example.com/a?id=1"),
            norm("http://example.com/a?id=2")
        );
        assert_eq!(norm("http://example.com:8080/a"), "example.com:8080/a");
        assert_eq!(norm("https://example.com:443/a"), "example.com/a");
        assert_eq!(norm("http://example.com:443/a"), "example.com/a");
        assert!(parse("http://example.com:http/a").is_none());
        assert!(parse("http://exa mple.com/a").is_none());
        assert_eq!(norm("http://user:pw@example.com/a"), "example.com/a");
        assert_eq!(norm("http://example.com/a%2fb"), "example.com/a%2Fb");
        assert_eq!(
            norm("http://example.com/caf%C3%A9"),
            "example.com/caf%C3%A9"
        );
    }

    #[test]
    fn rejects_non_http() {
        for u in [
            "ftp://example.com/x",
            "mailto:a@b.com",
            "example.com/x",
            "http:///path",
            "javascript:alert(1)",
        ] {
            assert!(parse(u).is_none(), "{u}");
        }
    }

    #[test]
    fn domain_blocking_is_by_label_suffix() {
        let d: Vec<String> = DEFAULT_BLOCKED_DOMAINS
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(host_blocked("en.wikipedia.org", &d));
        assert!(host_blocked("en.m.wikipedia.org", &d));
        assert!(host_blocked("wikipedia.org", &d));
        assert!(!host_blocked("notwikipedia.org", &d));
        assert!(host_blocked("i.imgur.com", &d));
        assert!(!host_blocked("cnn.com", &d));
    }

    #[test]
    fn extension_blocking_ignores_case_and_query() {
        let e: Vec<String> = DEFAULT_BLOCKED_EXTENSIONS
            .iter()
            .map(|s| s.to_string())
            .collect();
        let p = parse("http://a.com/pic.JPG?size=2").unwrap();
        assert!(extension_blocked(p.path, &e));
        let p = parse("http://a.com/story.html?x=.jpg").unwrap();
        assert!(!extension_blocked(p.path, &e));
    }
}
