//! Bearer tokens as the configuration reads them: from a file or a variable, trimmed, checked
//! for length and for characters a header can carry, held as a secret.

use std::path::Path;

use secrecy::SecretString;

/// Reads and checks a token file (a regular file of at most 64 KiB): the trimmed content, at
/// least 16 characters.
pub fn read_token_file(path: &Path) -> Result<SecretString, String> {
    read_token_file_of(path, MIN_TOKEN_LEN)
}

/// Reads and checks a token file whose token has at least `min_len` characters.
pub(super) fn read_token_file_of(path: &Path, min_len: usize) -> Result<SecretString, String> {
    let bytes = zeroize::Zeroizing::new(
        crate::files::read_regular(path, crate::files::MAX_TOKEN_FILE_BYTES)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
    );
    let text =
        std::str::from_utf8(&bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
    check_token(text.to_owned(), min_len)
}

/// The shortest token of a client of the credentials API.
pub(super) const MIN_TOKEN_LEN: usize = 16;

/// Trims a token and checks it: at least `min_len` characters, all visible ASCII.
pub(super) fn check_token(text: String, min_len: usize) -> Result<SecretString, String> {
    let token = zeroize::Zeroizing::new(text);
    let trimmed = token.trim();
    if trimmed.len() < min_len.max(1) {
        return Err(format!(
            "the token must be at least {} characters",
            min_len.max(1)
        ));
    }
    // A header value carries visible ASCII only: any other token could never be presented.
    if !trimmed.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "the token must be visible ASCII characters only (no whitespace, control or non-ASCII characters)"
                .to_owned(),
        );
    }
    Ok(SecretString::from(trimmed))
}
