//! Nursery children written with `?` on trellis operations, for the error types users pick
//! (DESIGN.md 4.1): `anyhow::Error`, `io::Error`, `Box<dyn Error + Send + Sync>`, and an enum
//! with a `From<Cancelled>` variant. In each, a cancellation embedded in the error is still
//! recognised (stripped, not reported) and a genuine error is reported, on virtual time.
#![allow(clippy::disallowed_types)]

use std::time::Duration;

use trellis_runtime::time::sleep;
use trellis_runtime::{nursery, Cancelled, Nursery, Runtime};

const HOUR: Duration = Duration::from_secs(3600);

fn virtual_runtime() -> Runtime {
    Runtime::builder().worker_threads(2).virtual_time(true).build().unwrap()
}

/// One child fails genuinely with `genuine`; the other is cancelled in `sleep(..)?`, whose
/// `Cancelled` travels inside an `E`. The group must hold exactly the genuine error.
macro_rules! check_error_type {
    ($name:ident, $e:ty, $genuine:expr, $is_genuine:expr) => {
        #[test]
        fn $name() {
            let rt = virtual_runtime();
            let group = rt
                .block_on(nursery(|n: Nursery<$e>| async move {
                    n.spawn(async {
                        sleep(HOUR).await?;
                        Ok(())
                    });
                    n.spawn(async {
                        sleep(Duration::from_secs(1)).await?;
                        let e: $e = $genuine;
                        Err::<(), $e>(e)
                    });
                    sleep(HOUR).await?;
                    Ok(())
                }))
                .unwrap_err();
            assert_eq!(group.len(), 1, "only the genuine error is reported");
            assert!(!group.is_cancellation());
            let check: fn(&$e) -> bool = $is_genuine;
            assert!(check(group.iter().next().unwrap()));
        }
    };
}

check_error_type!(anyhow_error, anyhow::Error, anyhow::anyhow!("genuine"), |e| e.to_string()
    == "genuine");

check_error_type!(io_error, std::io::Error, std::io::Error::other("genuine"), |e| e.to_string()
    == "genuine"
    && !trellis_runtime::is_cancelled(e));

check_error_type!(boxed_error, Box<dyn std::error::Error + Send + Sync>, "genuine".into(), |e| e
    .to_string()
    == "genuine");

#[derive(Debug)]
enum AppError {
    Cancelled(#[allow(dead_code)] Cancelled),
    Genuine,
}

impl From<Cancelled> for AppError {
    fn from(c: Cancelled) -> Self {
        AppError::Cancelled(c)
    }
}

check_error_type!(user_enum, AppError, AppError::Genuine, |e| matches!(e, AppError::Genuine));
