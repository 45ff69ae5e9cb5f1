//! Who may look, and who may change anything. A request is someone's when
//! it carries `Authorization: Bearer <token>` (the viewers' or the admins'
//! token), the cookie of a session a login with such a token opened
//! (`fdr_session`: `HttpOnly; Secure; SameSite=Strict`), or came on a
//! connection with a verified client certificate (a viewer). Anything
//! else gets 401 and no data. A change (snapshot create, model relearn)
//! needs an admin, and from a session its CSRF token.

use std::{
    collections::{HashMap, VecDeque},
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{Request, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    Extension, Form,
};
use fdr_proto::render::html::{h, page, url_part, Assets};
use ring::rand::SecureRandom as _;

use super::{Conn, Web, WebError};
use crate::config::Config;

pub const COOKIE: &str = "fdr_session";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Admin => "admin",
        }
    }
}

/// How a request proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Bearer,
    Session,
    ClientCert,
}

/// Who a request is from (in the request's extensions past
/// [`require`]).
#[derive(Debug, Clone)]
pub struct Principal {
    pub role: Role,
    pub via: Via,
    /// The session's CSRF token.
    pub csrf: Option<String>,
    session: Option<[u8; 32]>,
}

struct Session {
    role: Role,
    csrf: String,
    expires: Instant,
}

#[derive(Default)]
struct Sessions {
    /// By the SHA-256 of the cookie's value.
    map: HashMap<[u8; 32], Session>,
    /// Oldest first (ends first when full).
    order: VecDeque<[u8; 32]>,
}

pub struct Auth {
    viewer: Option<String>,
    admin: Option<String>,
    sessions: Mutex<Sessions>,
    ttl: Duration,
    max: usize,
    rng: ring::rand::SystemRandom,
}

fn read_token(what: &str, path: &Path) -> Result<String, WebError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| WebError::Auth(format!("reading {what} {}: {e}", path.display())))?;
    let t = text.trim();
    if t.is_empty() {
        return Err(WebError::Auth(format!(
            "{what} {} is empty",
            path.display()
        )));
    }
    Ok(t.to_owned())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn sha256(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b).into()
}

impl Auth {
    /// The tokens configured; with none at all (and no client CA), an
    /// admin token of its own in `<evidence.dir>/web-admin.token`.
    pub fn load(cfg: &Config) -> Result<Auth, WebError> {
        let w = &cfg.web;
        let viewer = w
            .viewer_token(&cfg.api)
            .map(|p| read_token("web viewer token file", &p))
            .transpose()?;
        let mut admin = w
            .admin_token_file
            .as_deref()
            .map(|p| read_token("web.admin_token_file", p))
            .transpose()?;
        let rng = ring::rand::SystemRandom::new();
        if viewer.is_none() && admin.is_none() && w.tls_client_ca_file.is_none() {
            let path = cfg.evidence.dir.join("web-admin.token");
            admin = Some(own_token(&path, &rng)?);
            tracing::warn!(
                file = %path.display(),
                "web UI: no credential configured; log in with the admin token in this file"
            );
        }
        if viewer.is_some() && viewer == admin {
            return Err(WebError::Auth(
                "the viewers' and the admins' web tokens are the same".into(),
            ));
        }
        Ok(Auth {
            viewer,
            admin,
            sessions: Mutex::new(Sessions::default()),
            ttl: w.session_ttl,
            max: w.max_sessions,
            rng,
        })
    }

    fn random(&self) -> Result<[u8; 32], ()> {
        let mut b = [0u8; 32];
        self.rng.fill(&mut b).map_err(|_| ())?;
        Ok(b)
    }

    /// The role a token grants.
    fn token_role(&self, token: &str) -> Option<Role> {
        let t = token.trim().as_bytes();
        // Both compared, whichever matches.
        let admin = self
            .admin
            .as_ref()
            .is_some_and(|a| constant_time_eq(a.as_bytes(), t));
        let viewer = self
            .viewer
            .as_ref()
            .is_some_and(|v| constant_time_eq(v.as_bytes(), t));
        if admin {
            Some(Role::Admin)
        } else if viewer {
            Some(Role::Viewer)
        } else {
            None
        }
    }

    /// Who sent these headers on this connection.
    pub fn identify(&self, headers: &HeaderMap, conn: Option<&Conn>) -> Option<Principal> {
        // A bearer token decides; another scheme (a proxy's Basic) is
        // not ours, and the cookie still counts.
        if let Some(token) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        {
            return self.token_role(token).map(|role| Principal {
                role,
                via: Via::Bearer,
                csrf: None,
                session: None,
            });
        }
        if let Some(id) = cookie(headers, COOKIE) {
            let key = sha256(id.as_bytes());
            let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            match s.map.get(&key) {
                Some(sess) if sess.expires > Instant::now() => {
                    return Some(Principal {
                        role: sess.role,
                        via: Via::Session,
                        csrf: Some(sess.csrf.clone()),
                        session: Some(key),
                    })
                }
                Some(_) => {
                    s.map.remove(&key);
                }
                None => {}
            }
        }
        if conn.is_some_and(|c| c.client_cert) {
            return Some(Principal {
                role: Role::Viewer,
                via: Via::ClientCert,
                csrf: None,
                session: None,
            });
        }
        None
    }

    /// A new session for `role`: the cookie's value.
    fn open(&self, role: Role) -> Option<String> {
        let id = hex(&self.random().ok()?);
        let csrf = hex(&self.random().ok()?);
        let key = sha256(id.as_bytes());
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        // Ended ones first, then the oldest while full.
        while let Some(old) = s.order.front().copied() {
            let ended = s.map.get(&old).is_none_or(|x| x.expires <= now);
            // The order list holds logged-out sessions too until they
            // reach its front: bounded at twice the cap.
            if ended || s.map.len() >= self.max || s.order.len() >= 2 * self.max {
                s.order.pop_front();
                s.map.remove(&old);
            } else {
                break;
            }
        }
        s.map.insert(
            key,
            Session {
                role,
                csrf,
                expires: now + self.ttl,
            },
        );
        s.order.push_back(key);
        Some(id)
    }

    fn close(&self, key: &[u8; 32]) {
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        s.map.remove(key);
    }
}

/// A token file of the console's own: read when there, else created with
/// mode 0600 and 256 random bits.
fn own_token(path: &Path, rng: &ring::rand::SystemRandom) -> Result<String, WebError> {
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(WebError::Auth(format!("reading {}: {e}", path.display()))),
    }
    let mut b = [0u8; 32];
    rng.fill(&mut b)
        .map_err(|_| WebError::Auth("no randomness for a token".into()))?;
    let token = hex(&b);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| WebError::Auth(format!("creating {}: {e}", dir.display())))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| WebError::Auth(format!("creating {}: {e}", path.display())))?;
    writeln!(f, "{token}")
        .and_then(|_| f.sync_all())
        .map_err(|e| WebError::Auth(format!("writing {}: {e}", path.display())))?;
    Ok(token)
}

/// A cookie's value.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Passes requests with a credential on (with their [`Principal`]);
/// answers the others 401 (the login page for a page, text for the rest).
pub async fn require(State(web): State<Arc<Web>>, mut req: Request, next: Next) -> Response {
    let conn = req.extensions().get::<Conn>().copied();
    // Another site may link to a page (a top-level navigation), never make
    // the console work for it: a fetch, a live query, data.
    let site = req
        .headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok());
    let mode = req
        .headers()
        .get("sec-fetch-mode")
        .and_then(|v| v.to_str().ok());
    let path = req.uri().path();
    if site == Some("cross-site")
        && (mode != Some("navigate") || path.starts_with("/api/") || path.starts_with("/live"))
    {
        return (StatusCode::FORBIDDEN, "cross-site request refused\n").into_response();
    }
    match web.auth.identify(req.headers(), conn.as_ref()) {
        Some(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        None => {
            let path = req.uri().path();
            let is_page = req.method() == Method::GET
                && !path.starts_with("/api/")
                && !path.ends_with("/package");
            let mut resp = if is_page {
                let next = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_else(|| "/".into());
                (StatusCode::UNAUTHORIZED, login_html(&next, None)).into_response()
            } else {
                (StatusCode::UNAUTHORIZED, "authentication required\n").into_response()
            };
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"fdr-console\""),
            );
            resp
        }
    }
}

/// Where a login may send the browser: a path of this site only.
fn local_next(next: &str) -> &str {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.chars().any(|c| c.is_control())
        && !next.starts_with("/login");
    if ok {
        next
    } else {
        "/incidents"
    }
}

fn login_html(next: &str, error: Option<&str>) -> axum::response::Html<String> {
    let mut main = String::from("<section class=\"login\"><h1>fdr console</h1>\n");
    if let Some(e) = error {
        main += &format!("<p class=\"error\" role=\"alert\">{}</p>\n", h(e));
    }
    main += &format!(
        "<form id=\"login\" method=\"post\" action=\"/login\">\
         <label for=\"token\">Access token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>\
         <input type=\"hidden\" name=\"next\" value=\"{}\">\
         <button type=\"submit\">Log in</button></form>\n\
         <p class=\"hint\">A viewer's or an admin's token (the console's <code>web.token_file</code> or \
         <code>web.admin_token_file</code>).</p></section>",
        h(local_next(next))
    );
    axum::response::Html(page(
        "Log in · fdr console",
        Assets::Served { csrf: None },
        "<header class=\"top\"><a class=\"brand\" href=\"/incidents\">fdr</a></header>",
        &main,
    ))
}

pub async fn login_page(
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
) -> Response {
    let next = q.get("next").map_or("/incidents", String::as_str);
    login_html(next, None).into_response()
}

pub async fn login(
    State(web): State<Arc<Web>>,
    conn: Option<Extension<Conn>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let peer = conn.map(|c| c.0.peer.to_string()).unwrap_or_default();
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|s| s == "cross-site" || s == "same-site")
    {
        return (StatusCode::FORBIDDEN, "cross-site login refused\n").into_response();
    }
    let next = local_next(form.get("next").map_or("/incidents", String::as_str)).to_owned();
    let token = form.get("token").map_or("", String::as_str);
    let Some(role) = web.auth.token_role(token) else {
        tracing::warn!(%peer, "web: a login with a wrong token");
        // Guessing is slow: one wrong try per second and connection.
        tokio::time::sleep(Duration::from_secs(1)).await;
        return (
            StatusCode::UNAUTHORIZED,
            login_html(&next, Some("Wrong token.")),
        )
            .into_response();
    };
    let Some(id) = web.auth.open(role) else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no randomness for a session\n",
        )
            .into_response();
    };
    tracing::info!(role = role.name(), %peer, "web: login");
    let max_age = web.auth.ttl.as_secs();
    let cookie =
        format!("{COOKIE}={id}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={max_age}");
    let mut resp = Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, url_location(&next))
        .body(axum::body::Body::empty())
        .unwrap_or_default();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// A local path as a Location header value (non-ASCII percent-encoded).
fn url_location(path: &str) -> String {
    path.chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() && c != ' ' {
                c.to_string()
            } else {
                url_part(&c.to_string())
            }
        })
        .collect()
}

pub async fn logout(
    State(web): State<Arc<Web>>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Some(r) = csrf_refusal(&p, &headers, form.get("csrf").map(String::as_str)) {
        return r;
    }
    if let Some(k) = &p.session {
        web.auth.close(k);
    }
    let mut resp = Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, "/login")
        .body(axum::body::Body::empty())
        .unwrap_or_default();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "fdr_session=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0",
        ),
    );
    resp
}

/// A change from a session needs its CSRF token (form field `csrf` or
/// header `X-CSRF-Token`) and must not come from another site; a bearer
/// token is no ambient credential (a browser never adds it by itself).
pub fn csrf_refusal(p: &Principal, headers: &HeaderMap, form: Option<&str>) -> Option<Response> {
    let refuse = |why: &str| Some((StatusCode::FORBIDDEN, format!("{why}\n")).into_response());
    match p.via {
        Via::Bearer => None,
        Via::ClientCert => {
            refuse("a client certificate cannot change anything; log in with a token")
        }
        Via::Session => {
            if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
                if !matches!(site, "same-origin" | "none") {
                    return refuse("cross-site request refused");
                }
            }
            let given = headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .or(form)
                .unwrap_or("");
            match &p.csrf {
                Some(t)
                    if !given.is_empty() && constant_time_eq(t.as_bytes(), given.as_bytes()) =>
                {
                    None
                }
                _ => refuse("missing or wrong CSRF token"),
            }
        }
    }
}

/// Admins only.
pub fn admin_refusal(p: &Principal) -> Option<Response> {
    (p.role != Role::Admin).then(|| {
        (
            StatusCode::FORBIDDEN,
            "an admin credential is needed for this\n",
        )
            .into_response()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth {
            viewer: Some("v-token".into()),
            admin: Some("a-token".into()),
            sessions: Mutex::new(Sessions::default()),
            ttl: Duration::from_secs(60),
            max: 2,
            rng: ring::rand::SystemRandom::new(),
        }
    }

    #[test]
    fn tokens_sessions_and_client_certificates() {
        let a = auth();
        let mut h = HeaderMap::new();
        assert!(a.identify(&h, None).is_none());
        h.insert(header::AUTHORIZATION, "Bearer v-token".parse().unwrap());
        assert_eq!(a.identify(&h, None).unwrap().role, Role::Viewer);
        h.insert(header::AUTHORIZATION, "Bearer a-token".parse().unwrap());
        assert_eq!(a.identify(&h, None).unwrap().role, Role::Admin);
        h.insert(header::AUTHORIZATION, "Bearer nope".parse().unwrap());
        assert!(a.identify(&h, None).is_none());
        let id = a.open(Role::Admin).unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            format!("x=1; {COOKIE}={id}").parse().unwrap(),
        );
        let p = a.identify(&h, None).unwrap();
        assert_eq!((p.role, p.via), (Role::Admin, Via::Session));
        // The oldest session ends when a third opens (max 2).
        a.open(Role::Viewer).unwrap();
        a.open(Role::Viewer).unwrap();
        assert!(a.identify(&h, None).is_none());
        // Closed sessions do not pile up in the order list.
        for _ in 0..100 {
            let id = a.open(Role::Viewer).unwrap();
            a.close(&sha256(id.as_bytes()));
        }
        let s = a.sessions.lock().unwrap();
        assert!(
            s.order.len() <= 4 && s.map.len() <= 2,
            "{} {}",
            s.order.len(),
            s.map.len()
        );
        let conn = Conn {
            client_cert: true,
            peer: "127.0.0.1:1".parse().unwrap(),
        };
        assert_eq!(
            a.identify(&HeaderMap::new(), Some(&conn)).unwrap().role,
            Role::Viewer
        );
    }

    #[test]
    fn csrf_is_needed_from_a_session_only() {
        let a = auth();
        let id = a.open(Role::Admin).unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, format!("{COOKIE}={id}").parse().unwrap());
        let p = a.identify(&h, None).unwrap();
        assert!(csrf_refusal(&p, &h, None).is_some());
        assert!(csrf_refusal(&p, &h, Some("wrong")).is_some());
        let t = p.csrf.clone().unwrap();
        assert!(csrf_refusal(&p, &h, Some(&t)).is_none());
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(csrf_refusal(&p, &h, Some(&t)).is_some());
        let bearer = Principal {
            role: Role::Admin,
            via: Via::Bearer,
            csrf: None,
            session: None,
        };
        assert!(csrf_refusal(&bearer, &HeaderMap::new(), None).is_none());
    }

    #[test]
    fn a_login_sends_the_browser_to_this_site_only() {
        assert_eq!(local_next("/incidents/3"), "/incidents/3");
        assert_eq!(local_next("//evil.example/"), "/incidents");
        assert_eq!(local_next("https://evil.example/"), "/incidents");
        assert_eq!(local_next("/\\evil"), "/incidents");
    }
}
