# bench/run's chart: one horizontal bar per load row, its requests/s as a ratio to the plain
# Rocket route of the same run. Input (bench/report.mjs writes it): a tab-separated file,
# one row a line: label, ratio, colour (0xRRGGBB as a number).
#
#   gnuplot -e "data='chart.tsv'; out='benchmarks.svg'; title='...'" bench/chart.gp
if (!exists("data")) data = 'chart.tsv'
if (!exists("out")) out = 'benchmarks.svg'
if (!exists("title")) title = ''
set datafile separator "\t"
stats data using 2 nooutput
rows = STATS_records
xmax = (STATS_max > 1.0 ? STATS_max : 1.0) * 1.18
set terminal svg size 1000, (110 + 34 * rows) dynamic noenhanced font "sans,13" background rgb "white"
set output out
set title "Requests/s as a ratio to a plain Rocket route, same run (higher is better)\n" . title
set style fill solid 0.9 noborder
set xrange [0:xmax]
set yrange [rows - 0.5:-0.5]
set xtics nomirror
set ytics nomirror scale 0
set grid xtics lc rgb "#dddddd"
set border 3
set key off
set lmargin 52
set arrow from 1, graph 0 to 1, graph 1 nohead back dashtype 2 lc rgb "#555555"
# The ratio at the end of each bar: inside it when the bar is long enough, else after it. (An
# empty label rather than a NaN point: a labels plot without any point crashes gnuplot 5.4.)
inside = 0.25 * xmax
plot data using ($2 / 2):0:($2 / 2):(0.36):3:yticlabels(1) with boxxyerror lc rgb variable, \
     data using 2:0:($2 >= inside ? sprintf("%.2f× ", $2) : "") with labels right tc rgb "white" font "sans,12", \
     data using 2:0:($2 < inside ? sprintf(" %.2f×", $2) : "") with labels left font "sans,12"
