//! The session cookie: reading the id from a request, writing and removing it (G1, G7).

use std::time::Duration;

use http::header::{COOKIE, HeaderMap, HeaderValue};

use crate::error::ConfigError;
use crate::id::SessionId;

/// The `SameSite` attribute of the session cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SameSite {
    /// Sent only with same-site requests.
    Strict,
    /// Sent with same-site requests and top-level cross-site navigations (the default).
    #[default]
    Lax,
    /// Sent with every request; needs `Secure`.
    None,
}

/// What a request's `Cookie` headers said about the session.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// No session cookie.
    Missing,
    /// A session cookie that is not an id (wrong length, alphabet or encoding).
    Invalid,
    /// A syntactically valid id; the store decides whether it names a session.
    Id(SessionId),
    /// A cookie-only session's sealed value, not yet opened.
    Sealed(String),
}

/// Cookie attributes, validated once when the layer is built. Set and removal cookies are
/// both made by [`CookieSettings::cookie`], so they cannot differ in attributes (G1).
#[derive(Debug, Clone)]
pub(crate) struct CookieSettings {
    pub(crate) name: String,
    pub(crate) path: String,
    pub(crate) domain: Option<String>,
    pub(crate) secure: bool,
    pub(crate) same_site: SameSite,
    /// Without `Max-Age`, the browser drops the cookie when it closes.
    pub(crate) browser_session: bool,
    /// The rendered attributes (`; HttpOnly; SameSite=Lax; Secure; Path=/`), shared by every
    /// set and removal cookie: computed once by [`CookieSettings::prepared`].
    attributes: String,
    /// The removal cookie, computed once.
    removal: Option<HeaderValue>,
}

impl Default for CookieSettings {
    fn default() -> Self {
        Self {
            name: "__Host-sessio".into(),
            path: "/".into(),
            domain: None,
            secure: true,
            same_site: SameSite::Lax,
            browser_session: false,
            attributes: String::new(),
            removal: None,
        }
    }
}

fn is_token_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

fn is_attribute_text(text: &str) -> bool {
    text.bytes()
        .all(|byte| (0x20..0x7f).contains(&byte) && byte != b';')
}

impl CookieSettings {
    /// Validates the settings and renders the attributes once, so that writing a cookie on the
    /// request path is one string and one header value.
    pub(crate) fn prepared(mut self) -> Result<Self, ConfigError> {
        self.validate()?;
        let rendered = self.cookie(String::new()).build().to_string();
        self.attributes = rendered
            .strip_prefix(&format!("{}=", self.name))
            .unwrap_or_default()
            .to_owned();
        let mut removal = self.cookie(String::new()).build();
        removal.make_removal();
        self.removal = HeaderValue::try_from(removal.to_string()).ok();
        Ok(self)
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.name.is_empty() || !self.name.bytes().all(is_token_char) {
            return Err(ConfigError::InvalidCookieName(self.name.clone()));
        }
        if !self.path.starts_with('/') || !is_attribute_text(&self.path) {
            return Err(ConfigError::InvalidPath(self.path.clone()));
        }
        if let Some(domain) = &self.domain
            && (domain.is_empty() || !is_attribute_text(domain) || domain.contains(' '))
        {
            return Err(ConfigError::InvalidDomain(domain.clone()));
        }
        // Browsers match cookie prefixes case-insensitively.
        let lower = self.name.to_ascii_lowercase();
        if lower.starts_with("__host-") {
            if !self.secure {
                return Err(ConfigError::HostPrefix("Secure is off"));
            }
            if self.path != "/" {
                return Err(ConfigError::HostPrefix("the path is not /"));
            }
            if self.domain.is_some() {
                return Err(ConfigError::HostPrefix("a Domain is set"));
            }
        }
        if lower.starts_with("__secure-") && !self.secure {
            return Err(ConfigError::SecurePrefix);
        }
        if self.same_site == SameSite::None && !self.secure {
            return Err(ConfigError::SameSiteNoneWithoutSecure);
        }
        Ok(())
    }

    /// Finds the session cookie among the request's cookies. For server-stored sessions,
    /// the first well-formed id wins, found without allocating (when several cookies carry
    /// the name, say an old one with another path). For cookie-only sessions, the first
    /// value of a possible size is taken, to be opened later.
    pub(crate) fn incoming(&self, headers: &HeaderMap, sealed: bool) -> Incoming {
        let mut found = Incoming::Missing;
        for header in headers.get_all(COOKIE) {
            let Ok(header) = header.to_str() else {
                continue;
            };
            for pair in header.split(';') {
                let Some((name, value)) = pair.split_once('=') else {
                    continue;
                };
                if name.trim() != self.name {
                    continue;
                }
                let value = value.trim();
                if sealed {
                    if self.name.len() + 1 + value.len() <= crate::sealed::MAX_COOKIE_BYTES {
                        return Incoming::Sealed(value.to_owned());
                    }
                    found = Incoming::Invalid;
                    continue;
                }
                match SessionId::parse(value) {
                    Some(id) => return Incoming::Id(id),
                    None => found = Incoming::Invalid,
                }
            }
        }
        found
    }

    fn cookie(&self, value: String) -> cookie::CookieBuilder<'static> {
        let same_site = match self.same_site {
            SameSite::Strict => cookie::SameSite::Strict,
            SameSite::Lax => cookie::SameSite::Lax,
            SameSite::None => cookie::SameSite::None,
        };
        let builder = cookie::Cookie::build((self.name.clone(), value))
            .path(self.path.clone())
            .http_only(true)
            .secure(self.secure)
            .same_site(same_site);
        match &self.domain {
            Some(domain) => builder.domain(domain.clone()),
            None => builder,
        }
    }

    /// The `Set-Cookie` value that gives the browser `id`, valid for `max_age` (or until the
    /// browser closes, for browser-session cookies).
    pub(crate) fn set(&self, id: &SessionId, max_age: Duration) -> Option<HeaderValue> {
        self.set_value(id.expose_cookie_value(), max_age)
    }

    /// [`CookieSettings::set`] for any value: a cookie-only session's sealed value.
    pub(crate) fn set_value(&self, value: String, max_age: Duration) -> Option<HeaderValue> {
        use std::fmt::Write;
        let mut text =
            String::with_capacity(self.name.len() + value.len() + self.attributes.len() + 24);
        text.push_str(&self.name);
        text.push('=');
        text.push_str(&value);
        if !self.browser_session {
            let _ = write!(text, "; Max-Age={}", max_age.as_secs());
        }
        text.push_str(&self.attributes);
        HeaderValue::try_from(text).ok()
    }

    /// The `Set-Cookie` value that makes the browser drop the session cookie: same name,
    /// path, domain, `Secure`, `HttpOnly` and `SameSite` as [`CookieSettings::set`], because
    /// both carry the same rendered attributes.
    pub(crate) fn removal(&self) -> Option<HeaderValue> {
        self.removal.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attributes(value: &HeaderValue) -> Vec<String> {
        let mut parts: Vec<String> = value
            .to_str()
            .unwrap()
            .split(';')
            .skip(1)
            .map(|part| part.trim().to_string())
            .filter(|part| !part.starts_with("Max-Age") && !part.starts_with("Expires"))
            .collect();
        parts.sort();
        parts
    }

    #[test]
    fn removal_has_the_attributes_of_the_set_cookie() {
        let settings = CookieSettings {
            name: "sid".into(),
            path: "/app".into(),
            domain: Some("example.com".into()),
            same_site: SameSite::Strict,
            ..CookieSettings::default()
        };
        let settings = settings.prepared().unwrap();
        let id = SessionId::generate().unwrap();
        let set = settings.set(&id, Duration::from_secs(60)).unwrap();
        let removal = settings.removal().unwrap();
        assert_eq!(attributes(&set), attributes(&removal));
        for expected in [
            "HttpOnly",
            "Secure",
            "SameSite=Strict",
            "Path=/app",
            "Domain=example.com",
        ] {
            assert!(
                attributes(&set).iter().any(|a| a == expected),
                "{expected} missing"
            );
        }
        assert!(removal.to_str().unwrap().contains("Max-Age=0"));
        assert!(set.to_str().unwrap().contains("Max-Age=60"));
    }

    #[test]
    fn host_prefix_rules_are_enforced() {
        let host = |f: fn(&mut CookieSettings)| {
            let mut settings = CookieSettings::default();
            f(&mut settings);
            settings.validate()
        };
        assert!(host(|_| {}).is_ok());
        assert!(matches!(
            host(|s| s.secure = false),
            Err(ConfigError::HostPrefix(_))
        ));
        assert!(matches!(
            host(|s| s.path = "/x".into()),
            Err(ConfigError::HostPrefix(_))
        ));
        assert!(matches!(
            host(|s| s.domain = Some("a.example".into())),
            Err(ConfigError::HostPrefix(_))
        ));
        assert!(matches!(host(|s| s.name = "__host-sid".into()), Ok(())));
        assert!(matches!(
            host(|s| {
                s.name = "sid".into();
                s.secure = false;
                s.same_site = SameSite::None;
            }),
            Err(ConfigError::SameSiteNoneWithoutSecure)
        ));
        assert!(matches!(
            host(|s| s.name = "bad name".into()),
            Err(ConfigError::InvalidCookieName(_))
        ));
    }

    #[test]
    fn incoming_takes_the_first_well_formed_id() {
        let settings = CookieSettings::default().prepared().unwrap();
        let id = SessionId::generate().unwrap().expose_cookie_value();
        let mut headers = HeaderMap::new();
        headers.append(
            COOKIE,
            HeaderValue::from_static("other=1; __Host-sessio=garbage"),
        );
        assert!(matches!(
            settings.incoming(&headers, false),
            Incoming::Invalid
        ));
        headers.append(
            COOKIE,
            HeaderValue::try_from(format!("__Host-sessio={id}")).unwrap(),
        );
        assert!(matches!(
            settings.incoming(&headers, false),
            Incoming::Id(_)
        ));
        assert!(matches!(
            settings.incoming(&HeaderMap::new(), false),
            Incoming::Missing
        ));
    }
}
