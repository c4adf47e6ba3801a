//! The reports' charts: inline SVG drawn by plotters. A chart that cannot be
//! drawn is left empty and logged, never a failed report.

use plotters::prelude::*;

const WIDTH: u32 = 560;
const HEIGHT: u32 = 340;

const COLOURS: [RGBColor; 3] = [RGBColor(31, 119, 180), RGBColor(160, 160, 160), RGBColor(214, 39, 40)];

/// Lines of points, each series in its own colour, with a legend.
pub fn line_chart(
    caption: &str,
    x_label: &str,
    y_label: &str,
    x: (f64, f64),
    y: (f64, f64),
    series: &[(&str, Vec<(f64, f64)>)],
) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        let drawn = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(caption, ("sans-serif", 14))
                .margin(10)
                .x_label_area_size(35)
                .y_label_area_size(55)
                .build_cartesian_2d(x.0..x.1, y.0..y.1)?;
            chart.configure_mesh().x_desc(x_label).y_desc(y_label).draw()?;
            for (i, (name, points)) in series.iter().enumerate() {
                let colour = COLOURS[i % COLOURS.len()];
                chart
                    .draw_series(LineSeries::new(points.iter().copied(), colour.stroke_width(2)))?
                    .label(*name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour));
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))?;
            }
            chart.configure_series_labels().background_style(WHITE).border_style(BLACK).draw()?;
            root.present()?;
            Ok(())
        })();
        if let Err(e) = drawn {
            tracing::warn!(error = %e, "a report plot could not be drawn");
        }
    }
    svg
}

/// One bar per label.
pub fn bar_chart(caption: &str, labels: &[String], values: &[f64]) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        let low = values.iter().copied().fold(0.0, f64::min);
        let high = values.iter().copied().fold(0.0, f64::max);
        let pad = ((high - low) * 0.1).max(1e-9);
        let drawn = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(caption, ("sans-serif", 14))
                .margin(10)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d((0..labels.len()).into_segmented(), (low - pad)..(high + pad))?;
            chart
                .configure_mesh()
                .x_label_formatter(&|v| match v {
                    SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
                    _ => String::new(),
                })
                .draw()?;
            chart.draw_series(values.iter().enumerate().map(|(i, &v)| {
                let (from, to) = (SegmentValue::Exact(i), SegmentValue::Exact(i + 1));
                let mut bar = Rectangle::new([(from, 0.0), (to, v)], COLOURS[0].filled());
                bar.set_margin(0, 0, 6, 6);
                bar
            }))?;
            root.present()?;
            Ok(())
        })();
        if let Err(e) = drawn {
            tracing::warn!(error = %e, "a report plot could not be drawn");
        }
    }
    svg
}
