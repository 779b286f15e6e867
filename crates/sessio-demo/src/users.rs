//! The demo's users: names and passwords from the command line.

use std::str::FromStr;

use subtle::ConstantTimeEq;

/// Who may log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Users(Vec<(String, String)>);

impl Users {
    /// Whether `name` and `password` match a user. Compares every user's password in
    /// constant time, so timing tells neither which names exist nor how much of a password
    /// matched.
    pub fn verify(&self, name: &str, password: &str) -> bool {
        let mut found = subtle::Choice::from(0);
        for (user, secret) in &self.0 {
            let name_matches = user.as_bytes().ct_eq(name.as_bytes());
            let password_matches = secret.as_bytes().ct_eq(password.as_bytes());
            found |= name_matches & password_matches;
        }
        found.into()
    }
}

impl FromStr for Users {
    type Err = String;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        let users = list
            .split(',')
            .map(|pair| match pair.trim().split_once(':') {
                Some((name, password)) if !name.is_empty() && !password.is_empty() => {
                    Ok((name.to_owned(), password.to_owned()))
                }
                _ => Err(format!(
                    "invalid user {pair:?}: use name:password, separated by commas"
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self(users))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_matching_pairs_verify() {
        let users: Users = "alice:wonderland,bob:builder".parse().unwrap();
        assert!(users.verify("alice", "wonderland"));
        assert!(users.verify("bob", "builder"));
        assert!(!users.verify("alice", "builder"));
        assert!(!users.verify("carol", "wonderland"));
        assert!(!users.verify("alice", "wonderlan"));
        assert!("alice".parse::<Users>().is_err());
        assert!("alice:".parse::<Users>().is_err());
    }
}
