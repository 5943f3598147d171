//! Progress bars of long commands, in one style, and only where a person
//! watches: none under CI or when stderr is a pipe or a file.

/// A bar of `len` steps drawn with `template` (indicatif's syntax).
pub fn bar(len: u64, template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len).with_style(
        indicatif::ProgressStyle::with_template(template)
            .expect("progress template")
            .progress_chars("=> "),
    );
    if std::env::var_os("CI").is_some() || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}

/// Polls `done` every 200 ms until it says so (false) or `signal` fires
/// first (true: interrupted). The signal is listened for once, across all
/// the polls, so one that comes between two of them is not missed.
pub async fn until<S: std::future::Future>(signal: S, mut done: impl FnMut() -> bool) -> bool {
    tokio::pin!(signal);
    loop {
        if done() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
            _ = &mut signal => return true,
        }
    }
}
