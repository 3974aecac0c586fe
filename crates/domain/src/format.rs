//! The six API formats. A format names both a wire dialect (Anthropic Messages, OpenAI Chat,
//! OpenAI Responses, Gemini) and a traffic pool: CLI variants are separate pools because many
//! relays accept only CLI-shaped traffic.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ApiFormat {
    /// Anthropic Messages API, upstream auth `x-api-key`.
    Claude,
    /// Messages API as sent by Claude Code; upstream auth `Authorization: Bearer`.
    ClaudeCli,
    /// OpenAI Chat Completions.
    Openai,
    /// OpenAI Responses API (Codex CLI).
    OpenaiCli,
    /// Gemini generateContent.
    Gemini,
    /// Gemini generateContent as sent by Gemini CLI.
    GeminiCli,
}

/// The wire dialect of a format (what the bytes look like).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    AnthropicMessages,
    OpenaiChat,
    OpenaiResponses,
    Gemini,
}

impl ApiFormat {
    pub const ALL: [Self; 6] = [
        Self::Claude,
        Self::ClaudeCli,
        Self::Openai,
        Self::OpenaiCli,
        Self::Gemini,
        Self::GeminiCli,
    ];

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Claude => "CLAUDE",
            Self::ClaudeCli => "CLAUDE_CLI",
            Self::Openai => "OPENAI",
            Self::OpenaiCli => "OPENAI_CLI",
            Self::Gemini => "GEMINI",
            Self::GeminiCli => "GEMINI_CLI",
        }
    }

    #[must_use]
    pub const fn dialect(self) -> Dialect {
        match self {
            Self::Claude | Self::ClaudeCli => Dialect::AnthropicMessages,
            // OPENAI_CLI is the Responses API (Codex), a different dialect from Chat.
            Self::Openai => Dialect::OpenaiChat,
            Self::OpenaiCli => Dialect::OpenaiResponses,
            Self::Gemini | Self::GeminiCli => Dialect::Gemini,
        }
    }

    #[must_use]
    pub const fn is_cli(self) -> bool {
        matches!(self, Self::ClaudeCli | Self::OpenaiCli | Self::GeminiCli)
    }
}

impl fmt::Display for ApiFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown API format `{0}` (expected one of CLAUDE, CLAUDE_CLI, OPENAI, OPENAI_CLI, GEMINI, GEMINI_CLI)"
)]
pub struct UnknownFormat(pub String);

impl FromStr for ApiFormat {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownFormat(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in ApiFormat::ALL {
            assert_eq!(f.as_str().parse::<ApiFormat>().unwrap(), f);
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(json, format!("\"{}\"", f.as_str()));
        }
        assert_eq!(
            "openai_cli".parse::<ApiFormat>().unwrap(),
            ApiFormat::OpenaiCli
        );
        assert!("SOAP".parse::<ApiFormat>().is_err());
    }
}
