//! Rendering: the templates compiled into the binary, the layout's shared context, and the
//! formatting filters pages use (money, timestamps, tokens).

use aether_domain::{Timestamp, Usd};
use axum::http::StatusCode;
use axum::response::Html;
use minijinja::{Environment, Value, context};

use crate::session::Viewer;

/// The layout and shared macros; page templates come from the page modules.
const SHARED: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("macros.html", include_str!("../templates/macros.html")),
    ("error.html", include_str!("../templates/error.html")),
    (
        "usage_overview.html",
        include_str!("../templates/usage_overview.html"),
    ),
];

pub struct Views {
    env: Environment<'static>,
}

impl Default for Views {
    fn default() -> Self {
        Self::new()
    }
}

/// `12345678` nano-USD → `"0.012345678"`, trailing zeros trimmed to at least cents.
fn money(v: Value) -> String {
    let s = v.to_string();
    let Ok(u) = s.trim_matches('"').parse::<Usd>() else {
        return s;
    };
    let t = u.to_string();
    match t.split_once('.') {
        Some((int, frac)) => {
            let frac = frac.trim_end_matches('0');
            let frac = if frac.len() < 2 {
                format!("{frac:0<2}")
            } else {
                frac.to_string()
            };
            format!("{int}.{frac}")
        }
        None => format!("{t}.00"),
    }
}

/// RFC 3339 or epoch-millisecond timestamps → `2026-11-26 14:03:07` (UTC).
fn when(v: Value) -> String {
    let ts = if let Some(ms) = v.as_i64() {
        Some(Timestamp::from_millis(ms))
    } else {
        v.as_str().and_then(|s| Timestamp::parse_rfc3339(s).ok())
    };
    match ts {
        Some(t) => {
            let d = t.to_datetime();
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                d.year(),
                u8::from(d.month()),
                d.day(),
                d.hour(),
                d.minute(),
                d.second()
            )
        }
        None if v.is_none() || v.is_undefined() => "—".to_string(),
        None => v.to_string(),
    }
}

/// `1234567` → `"1,234,567"`.
fn thousands(v: Value) -> String {
    let Some(n) = v.as_i64() else {
        return v.to_string();
    };
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

impl Views {
    #[must_use]
    pub fn new() -> Self {
        let mut env = Environment::new();
        for (name, src) in SHARED
            .iter()
            .chain(crate::pages::TEMPLATES.iter().flat_map(|t| t.iter()))
        {
            env.add_template(name, src)
                .unwrap_or_else(|e| panic!("template {name} does not parse: {e}"));
        }
        env.add_filter("money", money);
        env.add_filter("when", when);
        env.add_filter("thousands", thousands);
        Self { env }
    }

    /// Renders a page for a signed-in viewer: the layout gets who is looking, the anti-CSRF
    /// token and which navigation entry is current.
    pub fn page(&self, v: &Viewer, name: &str, nav: &str, ctx: Value) -> Html<String> {
        let base = context! {
            me => context! {
                email => v.who.user.email.clone(),
                username => v.who.user.username.clone(),
                is_admin => v.is_admin(),
            },
            csrf => v.csrf.clone(),
            nav => nav,
        };
        self.render(name, context! { ..ctx, ..base })
    }

    /// Renders a template with exactly `ctx` (pages without a viewer, e.g. login).
    pub fn render(&self, name: &str, ctx: Value) -> Html<String> {
        match self.env.get_template(name).and_then(|t| t.render(ctx)) {
            Ok(html) => Html(html),
            Err(e) => {
                tracing::error!(template = name, error = %e, "console template failed");
                Html(format!(
                    "<!doctype html><title>Error</title><p>This page could not be rendered ({}).</p>",
                    minijinja::HtmlEscape(&e.to_string())
                ))
            }
        }
    }

    /// An error page inside the layout.
    pub fn error(&self, v: &Viewer, status: StatusCode, message: &str) -> Html<String> {
        self.page(
            v,
            "error.html",
            "",
            context! { status => status.as_u16(), message => message },
        )
    }
}
