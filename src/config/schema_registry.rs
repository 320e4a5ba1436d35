//! Reading a cluster's `schema_registry`: its URL, basic auth and TLS.

use super::cluster::{read_secret_file, read_tls};
use super::http_url;
use super::types::{BasicAuth, SchemaRegistryConfig};
use super::yaml::{Reader, Section};

pub(super) fn read_schema_registry(
    r: &mut Reader<'_>,
    mut s: Section<'_>,
) -> Option<SchemaRegistryConfig> {
    let path = s.path().to_owned();
    let url = match s.field("url") {
        Some(f) => f.non_empty_string(r).and_then(|text| {
            let parsed = http_url(&text, "basic_auth").and_then(|url| {
                if url.query().is_some() || url.fragment().is_some() {
                    Err("the URL has a query or fragment; give the registry's base URL".to_owned())
                } else {
                    Ok(url)
                }
            });
            if let Err(why) = &parsed {
                // The URL is not echoed: it may hold credentials.
                f.error(
                    r,
                    format!(
                        "{why}; expected e.g. https://psrc-xxxxx.us-east-2.aws.confluent.cloud"
                    ),
                );
            }
            parsed.ok()
        }),
        None => {
            r.error(
                format!("{path}.url"),
                s.line(),
                "required; expected the registry's URL, e.g. https://psrc-xxxxx.us-east-2.aws.confluent.cloud",
            );
            None
        }
    };
    let auth_given = s.has("basic_auth");
    let mut a = s.section(r, "basic_auth");
    let a_path = a.path().to_owned();
    let username = a.field("username").and_then(|f| f.non_empty_string(r));
    let password = a.field("password").and_then(|f| f.secret(r));
    let password_given = a.has("password");
    let password_file = a
        .field("password_file")
        .and_then(|f| read_secret_file(r, &f));
    let password_file_given = a.has("password_file");
    a.finish(r);
    let section = s.section(r, "tls");
    let tls = read_tls(r, section);
    s.finish(r);

    let basic_auth = if auth_given {
        if password_given && password_file_given {
            r.error(
                format!("{a_path}.password_file"),
                None,
                "give either password or password_file, not both",
            );
            return None;
        }
        if username.is_none() || !(password_given || password_file_given) {
            r.error(
                a_path,
                None,
                "expected username and password (or password_file): the registry's API key and secret",
            );
            return None;
        }
        Some(BasicAuth {
            username: username?,
            password: password.or(password_file)?,
        })
    } else {
        None
    };
    let (url, tls) = (url?, tls?);
    Some(SchemaRegistryConfig {
        https: url.scheme() == "https",
        url,
        basic_auth,
        tls,
    })
}
