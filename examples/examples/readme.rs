//! The example from the README ("A taste"): tasks spread over the workers, joined in order.

fn main() {
    let total: u64 = trellis::run(async {
        // Each task runs on whichever worker thread is free; `await` joins it.
        let tasks: Vec<_> = (1..=4u64)
            .map(|i| trellis::spawn(async move { (0..i * 1_000_000).sum::<u64>() }))
            .collect();
        let mut total = 0;
        for task in tasks {
            total += task.await.expect("task finished");
        }
        total
    });
    println!("{total}");
}
