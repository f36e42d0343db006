# gnuplot script: bar chart of model-load.dat (bench-model-load.sh): per row the
# cold time to first byte, cold and warm time to read every byte, and the limit.
# usage: gnuplot -e "datafile='x.dat'; outfile='x.png'" bench-model-load.gp
set terminal pngcairo size 1100,540 font ",10"
set output outfile
set title "model load from object storage (nginx limit\\_rate per connection; guest under TCG)\nseconds until the program has read the first block / every byte; lower is better"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set ylabel "seconds"
set yrange [0:*]
set key outside top center horizontal noenhanced
set offsets 0, 0, graph 0.08, 0
set xtics rotate by -15 noenhanced
plot datafile using 2:xtic(1) title "cold, first byte", '' using 3 title "cold, every byte", \
     '' using 4 title "warm, every byte", '' using 5 title "limit"
