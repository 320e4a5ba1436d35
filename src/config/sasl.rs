//! Reading a cluster's `sasl`: the mechanism, user name and password (or a file with it), and
//! OAUTHBEARER's OIDC token endpoint, client credentials, scope and extensions.

use std::collections::BTreeMap;

use super::cluster::read_secret_file;
use super::types::{OAuthBearerConfig, SaslConfig, SaslMechanism};
use super::yaml::{Reader, Section};
use super::{http_url, or_default};

const SASL_MECHANISMS: [(&str, SaslMechanism); 4] = [
    ("PLAIN", SaslMechanism::Plain),
    ("SCRAM-SHA-256", SaslMechanism::ScramSha256),
    ("SCRAM-SHA-512", SaslMechanism::ScramSha512),
    ("OAUTHBEARER", SaslMechanism::OAuthBearer),
];

pub(super) fn read_sasl(r: &mut Reader<'_>, mut s: Section<'_>) -> Option<SaslConfig> {
    let path = s.path().to_owned();
    let mechanism = match s.field("mechanism") {
        Some(f) => f.choice(r, &SASL_MECHANISMS, true),
        None => Some(SaslMechanism::Plain),
    };
    let username = s.field("username").and_then(|f| f.non_empty_string(r));
    let username_given = s.has("username");
    let password = s.field("password").and_then(|f| f.secret(r));
    let password_given = s.has("password");
    let password_file = s
        .field("password_file")
        .and_then(|f| read_secret_file(r, &f));
    let password_file_given = s.has("password_file");
    let oauth_given = s.has("oauthbearer");
    let section = s.section(r, "oauthbearer");
    let oauth = if oauth_given {
        read_oauthbearer(r, section)
    } else {
        None
    };
    s.finish(r);

    let mechanism = mechanism?;
    if password_given && password_file_given {
        r.error(
            format!("{path}.password_file"),
            None,
            "give either password or password_file, not both",
        );
        return None;
    }
    let password = password.or(password_file);
    match mechanism {
        SaslMechanism::Plain | SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => {
            let mut ok = true;
            if !username_given {
                r.error(
                    format!("{path}.username"),
                    None,
                    format!(
                        "required with mechanism {}; expected the user name or API key",
                        mechanism.as_str()
                    ),
                );
                ok = false;
            }
            if !password_given && !password_file_given {
                r.error(
                    format!("{path}.password"),
                    None,
                    format!(
                        "required with mechanism {}; expected password (or password_file) holding the secret",
                        mechanism.as_str()
                    ),
                );
                ok = false;
            }
            if oauth_given {
                r.error(
                    format!("{path}.oauthbearer"),
                    None,
                    "only used with mechanism OAUTHBEARER",
                );
                ok = false;
            }
            if !ok {
                return None;
            }
            Some(SaslConfig {
                mechanism,
                username: Some(username?),
                password: Some(password?),
                oauthbearer: None,
            })
        }
        SaslMechanism::OAuthBearer => {
            if !oauth_given {
                r.error(
                    format!("{path}.oauthbearer"),
                    None,
                    "required with mechanism OAUTHBEARER; expected token_endpoint_url, client_id and client_secret",
                );
                return None;
            }
            if username_given || password_given || password_file_given {
                r.error(
                    format!("{path}.username"),
                    None,
                    "username and password are not used with OAUTHBEARER; use oauthbearer.client_id and client_secret",
                );
                return None;
            }
            Some(SaslConfig {
                mechanism,
                username: None,
                password: None,
                oauthbearer: Some(oauth?),
            })
        }
    }
}

fn read_oauthbearer(r: &mut Reader<'_>, mut s: Section<'_>) -> Option<OAuthBearerConfig> {
    let path = s.path().to_owned();
    let required = |s: &mut Section<'_>, r: &mut Reader<'_>, key: &'static str, what: &str| match s
        .field(key)
    {
        Some(f) => f.non_empty_string(r),
        None => {
            r.error(
                format!("{path}.{key}"),
                None,
                format!("required; expected {what}"),
            );
            None
        }
    };
    let token_endpoint_url = required(
        &mut s,
        r,
        "token_endpoint_url",
        "the OIDC token endpoint URL",
    )
    .and_then(
        |text| match http_url(&text, "client_id and client_secret") {
            Ok(_) => Some(text),
            Err(why) => {
                // The URL is not echoed: it may hold credentials.
                r.error(
                    format!("{path}.token_endpoint_url"),
                    None,
                    format!("{why}; expected e.g. https://idp.example.com/oauth2/token"),
                );
                None
            }
        },
    );
    let client_id = required(&mut s, r, "client_id", "the OAuth client id");
    let secret = s.field("client_secret").and_then(|f| f.secret(r));
    let secret_given = s.has("client_secret");
    let secret_file = s
        .field("client_secret_file")
        .and_then(|f| read_secret_file(r, &f));
    let secret_file_given = s.has("client_secret_file");
    let scope = s.field("scope").and_then(|f| f.non_empty_string(r));
    let extensions = or_default(s.field("extensions"), BTreeMap::new(), |f| f.string_map(r));
    s.finish(r);
    let client_secret = match (secret_given, secret_file_given) {
        (true, true) => {
            r.error(
                format!("{path}.client_secret_file"),
                None,
                "give either client_secret or client_secret_file, not both",
            );
            None
        }
        (false, false) => {
            r.error(
                format!("{path}.client_secret"),
                None,
                "required; expected client_secret (or client_secret_file)",
            );
            None
        }
        _ => secret.or(secret_file),
    };
    Some(OAuthBearerConfig {
        token_endpoint_url: token_endpoint_url?,
        client_id: client_id?,
        client_secret: client_secret?,
        scope,
        extensions: extensions?,
    })
}
