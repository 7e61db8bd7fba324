//! The session cookie exactly as Better Auth writes it:
//! `better-auth.session_token=<urlencoded TOKEN.BASE64(HMAC-SHA256(secret, TOKEN))>`, with
//! `HttpOnly; SameSite=Lax; Path=/; Max-Age=604800`, and the `__Secure-` prefix plus `Secure`
//! when the public URL is https.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::Sha256;
use tower_cookies::Cookie;
use tower_cookies::cookie::SameSite;

use super::session::SESSION_TTL;

const BASE_NAME: &str = "better-auth.session_token";

/// What JavaScript's `encodeURIComponent` leaves alone (Better Auth encodes cookie values with it).
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// Signs and reads session cookies with the configured secret.
#[derive(Clone)]
pub struct SessionCookies {
    secret: Vec<u8>,
    secure: bool,
}

impl SessionCookies {
    pub fn new(secret: &str, secure: bool) -> Self {
        Self {
            secret: secret.as_bytes().to_vec(),
            secure,
        }
    }

    /// The cookie's name (`__Secure-` prefixed over https).
    pub fn name(&self) -> &'static str {
        if self.secure {
            "__Secure-better-auth.session_token"
        } else {
            BASE_NAME
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC accepts keys of any length")
    }

    /// `TOKEN.SIGNATURE`, before URL-encoding.
    pub fn sign(&self, token: &str) -> String {
        let mut mac = self.mac();
        mac.update(token.as_bytes());
        format!("{token}.{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    /// The token inside a (URL-decoded) cookie value, if its signature is right.
    pub fn verify<'a>(&self, value: &'a str) -> Option<&'a str> {
        let (token, signature) = value.rsplit_once('.')?;
        let signature = STANDARD.decode(signature).ok()?;
        let mut mac = self.mac();
        mac.update(token.as_bytes());
        mac.verify_slice(&signature).ok()?;
        Some(token)
    }

    /// A `Set-Cookie` that stores the session.
    pub fn issue(&self, token: &str) -> Cookie<'static> {
        let value = utf8_percent_encode(&self.sign(token), URI_COMPONENT).to_string();
        self.base(value, SESSION_TTL.as_secs() as i64)
    }

    /// A `Set-Cookie` that removes the session cookie.
    pub fn clear(&self) -> Cookie<'static> {
        self.base(String::new(), 0)
    }

    fn base(&self, value: String, max_age_secs: i64) -> Cookie<'static> {
        let mut cookie = Cookie::new(self.name(), value);
        cookie.set_http_only(true);
        cookie.set_same_site(SameSite::Lax);
        cookie.set_path("/");
        cookie.set_max_age(tower_cookies::cookie::time::Duration::seconds(max_age_secs));
        if self.secure {
            cookie.set_secure(true);
        }
        cookie
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_in_padded_base64() {
        // RFC 4231 test case 2: HMAC-SHA256(key "Jefe", "what do ya want for nothing?").
        let c = SessionCookies::new("Jefe", false);
        let signed = c.sign("what do ya want for nothing?");
        assert_eq!(
            signed,
            "what do ya want for nothing?.W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM="
        );
        assert_eq!(c.verify(&signed), Some("what do ya want for nothing?"));
    }

    #[test]
    fn a_wrong_signature_or_secret_is_rejected() {
        let c = SessionCookies::new("secret-one-secret-one-secret-one-00", false);
        let signed = c.sign("abcDEF123");
        assert_eq!(c.verify(&signed), Some("abcDEF123"));
        let other = SessionCookies::new("secret-two-secret-two-secret-two-00", false);
        assert_eq!(other.verify(&signed), None);
        assert_eq!(c.verify("abcDEF123"), None);
        assert_eq!(c.verify("abcDEF123.notbase64!"), None);
        assert_eq!(c.verify(&signed.replace("abcDEF123", "abcDEF124")), None);
    }

    #[test]
    fn set_cookie_matches_better_auth() {
        let c = SessionCookies::new("Jefe", false);
        let set = c.issue("what do ya want for nothing?").to_string();
        assert_eq!(
            set,
            "better-auth.session_token=what%20do%20ya%20want%20for%20nothing%3F.W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM%3D; HttpOnly; SameSite=Lax; Path=/; Max-Age=604800"
        );
        let secure = SessionCookies::new("Jefe", true).issue("t").to_string();
        assert!(secure.starts_with("__Secure-better-auth.session_token="));
        assert!(secure.contains("; Secure"));
        assert_eq!(
            utf8_percent_encode("a+b/c=.-_~", URI_COMPONENT).to_string(),
            "a%2Bb%2Fc%3D.-_~"
        );
        let cleared = c.clear().to_string();
        assert!(cleared.contains("Max-Age=0"), "{cleared}");
    }
}
