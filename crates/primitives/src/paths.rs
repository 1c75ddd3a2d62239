//! Paths made absolute once, where they were given: every path the server, runtime, agent and
//! setup accept goes through here before it is written into a config or handed to another process
//! (which may run in another working directory, or, like the XDG base directory spec for
//! `XDG_DATA_HOME`, ignore relative paths altogether).

use std::path::{Component, Path, PathBuf};

/// `path` resolved against `base` (the directory it was given in), with `.` components removed.
/// `..` is kept: resolving it lexically would be wrong through symlinks.
pub fn absolute_from(base: &Path, path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    };
    joined
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// `path` resolved against the current working directory.
pub fn absolute(path: &Path) -> std::io::Result<PathBuf> {
    if path.is_absolute() {
        return Ok(absolute_from(Path::new("/"), path));
    }
    Ok(absolute_from(&std::env::current_dir()?, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_resolved_where_they_were_given() {
        let base = Path::new("/srv/clone");
        assert_eq!(
            absolute_from(base, Path::new(".erigolem")),
            Path::new("/srv/clone/.erigolem")
        );
        assert_eq!(
            absolute_from(base, Path::new("./a/./b/")),
            Path::new("/srv/clone/a/b")
        );
        assert_eq!(
            absolute_from(base, Path::new("../x")),
            Path::new("/srv/clone/../x")
        );
        assert_eq!(
            absolute_from(base, Path::new("/etc/nginx")),
            Path::new("/etc/nginx")
        );
    }
}
