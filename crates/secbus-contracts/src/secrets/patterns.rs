//! The secret guard's detectors: one table, each row a credential shape.
//!
//! No maintained crate offers a pattern set that fits here (the secret-scanning
//! crates are file and repository scanners with their own walkers, reports and
//! dependencies, or need a newer compiler), so the shapes are kept in this file,
//! after the public formats of each issuer and the rules of well-known scanners.
//!
//! How a string is checked (`super::SecretGuard`): the anchors of every row are
//! searched at once, without case; only the rows whose anchor occurs run their
//! regex. A row may ask for a least Shannon entropy, and a least mix of
//! lowercase, uppercase and digits, of the part its regex names `secret`, so
//! words, paths and placeholders next to a credential's name pass.
//! Placeholders (`********`, `[MASKED]`, `${VAR}`...) never count as secrets.
//!
//! Fields *named* like a credential are a separate rule ([`CREDENTIAL_WORDS`]).
//!
//! | detector | finds |
//! | --- | --- |
//! | `private_key` | PEM private key blocks (RSA, EC, DSA, OpenSSH, PKCS#8, encrypted, PGP) and PuTTY key files |
//! | `aws_access_key_id` | AWS access key ids (`AKIA`, `ASIA`, `ABIA`, `ACCA`, `A3T`... + 16) |
//! | `aws_secret_access_key` | 40-character AWS secret access keys next to an `aws`/`secret`/`access` name, or alone in a field so named |
//! | `gcp_api_key` | Google API keys (`AIza` + 35) |
//! | `gcp_oauth_client_secret` | Google OAuth client secrets (`GOCSPX-` + 28) |
//! | `google_oauth_access_token` | Google OAuth access tokens (`ya29.`) |
//! | `azure_storage_key` | `AccountKey=` of Azure storage connection strings |
//! | `azure_sas_signature` | the `sig=` of Azure shared access signatures |
//! | `azure_client_secret` | Microsoft Entra ID client secrets (`...Q~...`) |
//! | `github_token` | GitHub tokens (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`) |
//! | `gitlab_token` | GitLab tokens (`glpat-`, `gldt-`, `glrt-`, `glptt-`, ...) |
//! | `slack_token` | Slack tokens (`xoxb-`, `xoxp-`, `xoxa-`, `xoxr-`, `xoxs-`, `xoxe-`, `xapp-`) |
//! | `slack_webhook` | Slack incoming-webhook and workflow URLs |
//! | `stripe_key` | Stripe secret and restricted keys, webhook signing secrets |
//! | `npm_token` | npm access tokens (`npm_` + 36) |
//! | `pypi_token` | PyPI upload tokens |
//! | `sendgrid_key` | SendGrid API keys (`SG.` + 22 + `.` + 43) |
//! | `openai_key` | OpenAI API keys |
//! | `jwt` | JSON Web Tokens (three base64url parts, the first two JSON objects) |
//! | `url_password` | URLs with a password (`scheme://user:password@host`) |
//! | `bearer_credential` | `Bearer` / `Basic` authorization values |
//! | `credential_assignment` | `password=...`, `api_key: ...`, `--token ...` in free text, with an entropy floor |
//! | `credential_field` | a non-empty value of a field named like a credential (see [`CREDENTIAL_WORDS`]) |

/// One credential shape.
#[derive(Debug)]
pub(crate) struct Detector {
    /// The name a refusal or a redaction shows (`secret_detected` names it).
    pub(crate) name: &'static str,
    /// Literals, matched without case, one of which every match contains: the
    /// cheap first pass over every string.
    pub(crate) anchors: &'static [&'static str],
    /// The shape. A group named `secret` is the part the entropy floor and the
    /// placeholder check apply to; without one, the whole match.
    pub(crate) pattern: &'static str,
    /// Least Shannon entropy, in bits per character, of the secret part (0: none).
    pub(crate) min_entropy: f64,
    /// Least number of character classes (lowercase, uppercase, digit) in the
    /// secret part: random keys mix them, words and paths seldom do.
    pub(crate) min_classes: u8,
    /// Also a match: a value that is wholly `whole`, in a field whose name
    /// contains one of `words` (a credential without text around it to name it).
    pub(crate) field: Option<FieldRule>,
}

/// See [`Detector::field`].
#[derive(Debug)]
pub(crate) struct FieldRule {
    /// Lowercase.
    pub(crate) words: &'static [&'static str],
    /// The length of every value `whole` matches (a cheap first test).
    pub(crate) length: usize,
    pub(crate) whole: &'static str,
}

/// The table. Order matters only for which name a string matching two rows gets:
/// the first row wins, so specific issuers come before generic shapes.
pub(crate) const DETECTORS: &[Detector] = &[
    Detector {
        name: "private_key",
        anchors: &["-----BEGIN", "PuTTY-User-Key-File-"],
        pattern: r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----|PuTTY-User-Key-File-\d+:",
        min_entropy: 0.0,
        min_classes: 0,
        field: None,
    },
    Detector {
        name: "aws_access_key_id",
        anchors: &["AKIA", "ASIA", "ABIA", "ACCA", "A3T"],
        pattern: r"\b(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}\b",
        min_entropy: 0.0,
        min_classes: 0,
        field: None,
    },
    Detector {
        name: "aws_secret_access_key",
        anchors: &["aws", "secret", "access"],
        pattern: r#"(?i:aws|secret|access)[^\n]{0,40}?[:=\s"'](?P<secret>[A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)"#,
        // 40 random base64 characters carry about 4.7 bits each; a SHA-1 in hex at most 4.
        min_entropy: 4.2,
        min_classes: 3,
        field: Some(FieldRule {
            words: &["aws", "secret"],
            length: 40,
            whole: r"^[A-Za-z0-9/+]{40}$",
        }),
    },
    Detector {
        name: "gcp_api_key",
        anchors: &["AIza"],
        pattern: r"\bAIza[0-9A-Za-z_-]{35}(?:[^0-9A-Za-z_-]|$)",
        min_entropy: 0.0,
        min_classes: 0,
        field: None,
    },
    Detector {
        name: "gcp_oauth_client_secret",
        anchors: &["GOCSPX-"],
        pattern: r"\bGOCSPX-[A-Za-z0-9_-]{28}",
        min_entropy: 0.0,
        min_classes: 0,
        field: None,
    },
    Detector {
        name: "google_oauth_access_token",
        anchors: &["ya29."],
        pattern: r"\bya29\.(?P<secret>[0-9A-Za-z_-]{30,})",
        min_entropy: 3.5,
        min_classes: 0,
        field: None,
    },
    Detector {
        name: "azure_storage_key",
        anchors: &["AccountKey="],
        pattern: r"(?i:AccountKey)=(?P<secret>[A-Za-z0-9+/]{86}==)",
        min_entropy: 0.0,
        min_classes: 0,
        field: None,
    },
    Detector {
        name: "azure_sas_signature",
        anchors: &["sig="],
        pattern: r"(?:^|[?&;\s])sig=(?P<secret>[A-Za-z0-9%+/]{40,}={0,2})",
        min_entropy: 3.5,
        min_classes: 0,
        field: None,
    },
    Detector {
        name: "azure_client_secret",
        anchors: &["Q~"],
        pattern: r"(?:^|[^A-Za-z0-9_~.-])(?P<secret>[A-Za-z0-9_~.]{3}\dQ~[A-Za-z0-9_~.-]{31,34})(?:[^A-Za-z0-9_~.-]|$)",
        min_entropy: 3.5,
        min_classes: 0,
        field: None,
    },
    Detector {
        name: "github_token",
        anchors: &["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"],
        pattern: r"\b(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82})\b",
        min_entropy: 0.0,
        min_classes: 0,
        field: None,
    },
    Detector {
        name: "gitlab_token",
        anchors: &[
            "glpat-", "gldt-", "glrt-", "glptt-", "glft-", "glsoat-", "glcbt-", "gloas-",
        ],
        pattern: r"\bgl(?:pat|dt|rt|ptt|ft|soat|cbt|oas)-[A-Za-z0-9_.-]{20,}",
        min_entropy: 0.0,
        min_classes: 0,
        field: None,
    },
    Detector {
        name: "slack_token",
        anchors: &["xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-", "xoxe", "xapp-"],
        pattern: r"\b(?:xox[abprse](?:\.[A-Za-z0-9]+)?-[A-Za-z0-9-]{10,}|xapp-\d-[A-Z0-9]+-\d+-[a-z0-9]+)",
        min_entropy: 0.0,
        min_classes: 0,
        field: None,
    },
    Detector {
        name: "slack_webhook",
        anchors: &["hooks.slack.com/"],
        pattern: r"hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/_-]{20,}",
        min_entropy: 0.0,
        min_classes: 0,
        field: None,
    },
    Detector {
        name: "stripe_key",
        anchors: &["sk_live_", "sk_test_", "rk_live_", "rk_test_", "whsec_"],
        pattern: r"\b(?:[sr]k_(?:live|test)_[A-Za-z0-9]{16,}|whsec_[A-Za-z0-9+/=]{24,})",
        min_entropy: 0.0,
        min_classes: 0,
        field: None,
    },
    Detector {
        name: "npm_token",
        anchors: &["npm_"],
        pattern: r"\bnpm_(?P<secret>[A-Za-z0-9]{36})\b",
        min_entropy: 3.5,
        min_classes: 0,
        field: None,
    },
    Detector {
        name: "pypi_token",
        anchors: &["pypi-AgEIcHlwaS5vcmc"],
        pattern: r"\bpypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}",
        min_entropy: 0.0,
        min_classes: 0,
        field: None,
    },
    Detector {
        name: "sendgrid_key",
        anchors: &["SG."],
        pattern: r"\bSG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}\b",
        min_entropy: 0.0,
        min_classes: 0,
        field: None,
    },
    Detector {
        name: "openai_key",
        anchors: &["T3BlbkFJ", "sk-proj-", "sk-svcacct-", "sk-admin-"],
        pattern: r"\bsk-(?:[A-Za-z0-9_-]*T3BlbkFJ[A-Za-z0-9_-]{20,}|(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,})",
        min_entropy: 0.0,
        min_classes: 0,
        field: None,
    },
    Detector {
        name: "jwt",
        anchors: &["eyJ"],
        pattern: r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]*",
        min_entropy: 0.0,
        min_classes: 0,
        field: None,
    },
    Detector {
        name: "url_password",
        anchors: &["://"],
        pattern: r#"\b[A-Za-z][A-Za-z0-9+.-]{1,30}://[^\s/?#@:'"]+:(?P<secret>[^\s/?#@'"]+)@[^\s/?#@'"]"#,
        min_entropy: 0.0,
        min_classes: 0,
        field: None,
    },
    Detector {
        name: "bearer_credential",
        anchors: &["bearer ", "basic "],
        pattern: r"(?i:\b(?:bearer|basic))\s+(?P<secret>[A-Za-z0-9._~+/-]{16,}=*)",
        min_entropy: 3.5,
        min_classes: 2,
        field: None,
    },
    Detector {
        name: "credential_assignment",
        anchors: &[
            "password",
            "passwd",
            "pwd",
            "passphrase",
            "secret",
            "token",
            "api_key",
            "api-key",
            "apikey",
            "access_key",
            "access-key",
            "accesskey",
            "private_key",
            "private-key",
            "privatekey",
            "auth_key",
            "auth-key",
            "authkey",
            "credential",
        ],
        // `name = value`, `name: value`, `"name": "value"`, `name => value`.
        pattern: concat!(
            r"(?i:password|passwd|pwd|passphrase|secret|token|api[_-]?key|access[_-]?key",
            r"|private[_-]?key|auth[_-]?key|credentials?)",
            r#"\d?["']?\s*(?:[:=]|=>)\s*["']?(?P<secret>[^\s"',;&)}\]>]{8,})"#
        ),
        // Eight distinct characters at least: `password: required` passes, `P@ssw0rd123` does not.
        min_entropy: 3.0,
        min_classes: 0,
        field: None,
    },
    Detector {
        name: "credential_assignment",
        anchors: &[
            "-pass",
            "-pwd",
            "-secret",
            "-token",
            "-api",
            "-access",
            "-credential",
        ],
        // Command-line flags: `--password hunter2-x`, `-token abc...`.
        pattern: r#"(?:^|\s)--?(?i:pass|password|passwd|pwd|secret|client[_-]?secret|token|api[_-]?key|access[_-]?key|credentials?)\s+["']?(?P<secret>[^\s"']{8,})"#,
        min_entropy: 3.0,
        min_classes: 0,
        field: None,
    },
];

/// A field is named like a credential when the last word of its name (split at
/// `_`, `-`, `.`, spaces and lowercase-to-uppercase changes) is one of these...
pub(crate) const CREDENTIAL_WORDS: &[&str] = &[
    "password",
    "passwords",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "secrets",
    "token",
    "tokens",
    "apikey",
    "credential",
    "credentials",
    "privatekey",
];

/// ...or its last two words are `<one of these> key` (`api_key`, `accessKey`,
/// `private-key`, `signing_key`...).
pub(crate) const CREDENTIAL_KEY_QUALIFIERS: &[&str] = &[
    "api",
    "access",
    "private",
    "secret",
    "signing",
    "auth",
    "encryption",
    "master",
    "shared",
    "client",
];

/// A number counts only under these last words (a `password` of digits is a
/// password; a `max_tokens` of 1024 is a count).
pub(crate) const NUMERIC_CREDENTIAL_WORDS: &[&str] = &["password", "passwd", "pwd", "passphrase"];

/// Names whose first word is one of these are sizes and counts, not credentials
/// (`max_tokens`, `num_secrets`).
pub(crate) const QUANTITY_WORDS: &[&str] = &["max", "min", "num", "total", "count"];
