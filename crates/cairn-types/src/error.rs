//! Stable error codes shared by every crate and the wire.
//!
//! Each code has a fixed number (never reused) and a name used in JSON error
//! bodies `{code, message}`. The HTTP status for a code is decided in one
//! place: [`ErrorCode::http_status`].

use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($( $variant:ident = $num:literal, $name:literal, $status:literal; )*) => {
        /// A stable, machine-readable error class.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $( $variant, )*
        }

        impl ErrorCode {
            /// The number of this code; stable across releases.
            pub fn number(self) -> u16 {
                match self { $( ErrorCode::$variant => $num, )* }
            }

            /// The name used in JSON error bodies.
            pub fn as_str(self) -> &'static str {
                match self { $( ErrorCode::$variant => $name, )* }
            }

            /// The HTTP status that carries this code.
            pub fn http_status(self) -> u16 {
                match self { $( ErrorCode::$variant => $status, )* }
            }

            pub fn from_number(n: u16) -> Option<ErrorCode> {
                match n { $( $num => Some(ErrorCode::$variant), )* _ => None }
            }
        }
    };
}

error_codes! {
    Internal = 1, "internal", 500;
    BadRequest = 2, "bad_request", 400;
    InvalidEntry = 3, "invalid_entry", 400;
    PayloadTooLarge = 4, "payload_too_large", 413;
    StreamNotFound = 5, "stream_not_found", 404;
    StreamExists = 6, "stream_exists", 409;
    PartitionNotFound = 7, "partition_not_found", 404;
    OffsetOutOfRange = 8, "offset_out_of_range", 416;
    Corruption = 9, "corruption", 500;
    Storage = 10, "storage", 500;
    Unavailable = 11, "unavailable", 503;
    NotFound = 12, "not_found", 404;
    UnsupportedMediaType = 13, "unsupported_media_type", 415;
    InvalidStreamConfig = 14, "invalid_stream_config", 400;
    Timeout = 15, "timeout", 504;
    MethodNotAllowed = 16, "method_not_allowed", 405;
    Conflict = 17, "conflict", 409;
    Unauthorized = 18, "unauthorized", 401;
    Forbidden = 19, "forbidden", 403;
    InsufficientStorage = 20, "insufficient_storage", 507;
    RequestTimeout = 21, "request_timeout", 408;
    UriTooLong = 22, "uri_too_long", 414;
    HeadersTooLarge = 23, "headers_too_large", 431;
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_and_names_match_serde() {
        for n in 1..=23 {
            let code = ErrorCode::from_number(n).unwrap();
            assert_eq!(code.number(), n);
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
        assert_eq!(ErrorCode::from_number(0), None);
    }
}
