//! Checks operator settings commonly need, with errors that name the field,
//! the position and the value (``lock_reasons[2]: reason `debt` is listed
//! twice``).

/// Errors for the blank and the repeated entries of the list `field`, whose
/// entries are each a `noun` (`reason`, `action`).
pub fn list_errors(field: &str, noun: &str, entries: &[String]) -> Vec<String> {
    let mut errors = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        if entry.trim().is_empty() {
            errors.push(format!("{field}[{index}]: {noun} `{entry}` is empty"));
        } else if entries[..index].contains(entry) {
            errors.push(format!(
                "{field}[{index}]: {noun} `{entry}` is listed twice"
            ));
        }
    }
    errors
}

/// `Ok` when there are no errors: the shape `Policy::validate_settings`
/// returns.
///
/// # Errors
///
/// `errors`, when there are any.
pub fn verdict(errors: Vec<String>) -> Result<(), Vec<String>> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_and_repeated_entries_are_named_by_position_and_value() {
        let entries = ["a".to_owned(), " ".to_owned(), "a".to_owned()];
        assert_eq!(
            list_errors("reasons", "reason", &entries),
            [
                "reasons[1]: reason ` ` is empty",
                "reasons[2]: reason `a` is listed twice"
            ]
        );
        assert_eq!(verdict(vec![]), Ok(()));
    }
}
