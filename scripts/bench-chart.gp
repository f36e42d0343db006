# gnuplot script: bar chart of guest-bench.dat (job, vduse-blk, qsd, null_blk).
# usage: gnuplot -e "datafile='x.dat'; outfile='x.png'" bench-chart.gp
set terminal pngcairo size 1000,520 font ",10"
set output outfile
set title "vduse-blk vs qemu-storage-daemon (same guest, same run; TCG emulation)\nIOPS for 4k jobs, MiB/s for 1 MiB jobs (log scale)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set logscale y
set grid ytics
set key top right noenhanced
set xtics rotate by -20
plot datafile using 2:xtic(1) title "vduse-blk", '' using 3 title "qemu-storage-daemon", '' using 4 title "null_blk (ceiling)"
